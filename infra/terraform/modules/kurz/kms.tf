# Two customer managed keys, rotated yearly: one for data (the DynamoDB table, Redis at rest, the
# secrets, the click stream) and one for logs and the alarm topic (services that need their own
# grant in the key policy). Key policies delegate to IAM; roles get only the key uses they need
# (iam.tf). The click stream needs nothing in the key policy: Kinesis uses the key as the caller
# (a put's role needs kms:GenerateDataKey, a read's kms:Decrypt, both through Kinesis only).
#
# With several regions the data key is a multi-Region key made in the primary region and
# replicated to the others (the table's replicas and the secrets' replicas are encrypted with
# the key of their region). A key cannot become multi-Region later, so setting region_id on a
# deployment that already runs in one region would replace the key its table and secrets are
# encrypted with: this module does not do that migration (infra/README.md, "Two regions,
# active-active", says what is not done).

locals {
  # The key policy of a key only IAM policies grant uses of (iam.tf).
  key_policy_through_iam = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersThroughIAM"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
    ]
  })
}

resource "aws_kms_key" "data" {
  count                   = local.region_replica ? 0 : 1
  description             = "${var.name}: DynamoDB table, Redis at rest, Secrets Manager secrets, click stream"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  multi_region            = local.regions
  policy                  = local.key_policy_through_iam
  tags                    = local.tags
}

moved {
  from = aws_kms_key.data
  to   = aws_kms_key.data[0]
}

# A replica region's data key: the primary's key material, this region's key policy.
resource "aws_kms_replica_key" "data" {
  count                   = local.region_replica ? 1 : 0
  description             = "${var.name}: DynamoDB table replica, Redis at rest, Secrets Manager secret replicas, click stream (replica of the primary region's data key)"
  primary_key_arn         = var.primary_data_key_arn
  deletion_window_in_days = 30
  policy                  = local.key_policy_through_iam
  tags                    = local.tags

  lifecycle {
    precondition {
      condition     = var.primary_data_key_arn != null
      error_message = "region_role = \"replica\" needs primary_data_key_arn: the primary region's module output data_key_arn."
    }
  }
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.name}-data"
  target_key_id = local.data_key_arn
}

resource "aws_kms_key" "logs" {
  description             = "${var.name}: CloudWatch log groups and the alarm topic"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersThroughIAM"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsEncryptsThisAccountsLogGroups"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"
          }
        }
      },
      {
        Sid       = "CloudWatchAlarmsPublishToTheEncryptedTopic"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey*"]
        Resource  = "*"
        Condition = {
          StringEquals = { "aws:SourceAccount" = local.account_id }
        }
      },
    ]
  })
  tags = local.tags
}

resource "aws_kms_alias" "logs" {
  name          = "alias/${var.name}-logs"
  target_key_id = aws_kms_key.logs.key_id
}
