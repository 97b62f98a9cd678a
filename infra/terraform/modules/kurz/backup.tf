# AWS Backup of the table, beside point-in-time recovery: PITR restores the last 35 days inside
# this account and region, and whoever can delete the table (or its account) can delete it. A
# daily backup goes to a vault under vault lock in compliance mode (once the grace period is
# over, nobody, root included, can delete a recovery point before min_retention or shorten its
# retention), encrypted with a key of its own, and is copied to each vault in
# backup_copy_vault_arns: another region's and/or another account's (examples/production makes
# one in another region). DynamoDB backups can be copied and locked only with AWS Backup's
# advanced features for DynamoDB on (aws_backup_region_settings in the example: an account
# setting). The restore drill is in infra/README.md.

resource "aws_kms_key" "backup" {
  description             = "${var.name}: the AWS Backup vault of the table"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = local.key_policy_through_iam
  tags                    = local.tags
}

resource "aws_kms_alias" "backup" {
  name          = "alias/${var.name}-backup"
  target_key_id = aws_kms_key.backup.key_id
}

resource "aws_backup_vault" "kurz" {
  name          = "${var.name}-table"
  kms_key_arn   = aws_kms_key.backup.arn
  force_destroy = false
  tags          = local.tags
}

# Compliance mode: changeable_for_days set. For that many days after the apply the lock can
# still be removed (a mistake can be undone); after that it is permanent.
resource "aws_backup_vault_lock_configuration" "kurz" {
  backup_vault_name   = aws_backup_vault.kurz.name
  changeable_for_days = var.backup_lock_changeable_days
  min_retention_days  = var.backup_min_retention_days
  max_retention_days  = var.backup_max_retention_days
}

resource "aws_backup_plan" "kurz" {
  name = "${var.name}-table"

  rule {
    rule_name         = "daily"
    target_vault_name = aws_backup_vault.kurz.name
    schedule          = "cron(0 3 * * ? *)" # 03:00 UTC
    start_window      = 60
    completion_window = 1440 # a 50+ TB table takes hours

    lifecycle {
      delete_after = var.backup_retention_days
    }

    dynamic "copy_action" {
      for_each = var.backup_copy_vault_arns
      content {
        destination_vault_arn = copy_action.value
        lifecycle {
          delete_after = var.backup_retention_days
        }
      }
    }
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.backup_retention_days >= var.backup_min_retention_days && var.backup_retention_days <= var.backup_max_retention_days
      error_message = "backup_retention_days must lie within the vault lock's backup_min_retention_days and backup_max_retention_days, or the vault refuses the recovery points."
    }
  }
}

data "aws_iam_policy_document" "backup_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["backup.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "backup" {
  name               = "${var.name}-backup"
  assume_role_policy = data.aws_iam_policy_document.backup_assume.json
  tags               = local.tags
}

# What AWS Backup does with the role: back the table up (advanced DynamoDB backups:
# StartAwsBackupJob), copy recovery points to the other vaults, and restore into a new table
# named TABLE-restore-* for the drill (never into the live table). Inline, as every grant here.
data "aws_iam_policy_document" "backup" {
  statement {
    sid       = "BackUpTheTable"
    actions   = ["dynamodb:DescribeTable", "dynamodb:CreateBackup", "dynamodb:StartAwsBackupJob", "dynamodb:ListTagsOfResource"]
    resources = [local.table_arn]
  }
  statement {
    sid       = "ItsBackups"
    actions   = ["dynamodb:DescribeBackup", "dynamodb:DeleteBackup"]
    resources = ["${local.table_arn}/backup/*"]
  }
  statement {
    sid       = "RestoreIntoANewTable"
    actions   = ["dynamodb:RestoreTableFromAwsBackup", "dynamodb:DescribeTable", "dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan"]
    resources = ["arn:${local.partition}:dynamodb:*:${local.account_id}:table/${var.table_name}-restore-*"] # any region: the drill restores the copy
  }
  statement {
    sid       = "CopyToTheOtherVaults"
    actions   = ["backup:CopyIntoBackupVault", "backup:DescribeBackupVault"]
    resources = concat([aws_backup_vault.kurz.arn], var.backup_copy_vault_arns)
  }
  statement {
    sid       = "TheTablesAndTheVaultsKeys"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey", "kms:CreateGrant", "kms:ReEncryptFrom", "kms:ReEncryptTo"]
    resources = concat(local.data_key_arns, [aws_kms_key.backup.arn])
  }
  statement {
    sid       = "FindTheResourcesOfTheSelection"
    actions   = ["tag:GetResources"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "backup" {
  name   = "back-up-and-restore-the-table"
  role   = aws_iam_role.backup.id
  policy = data.aws_iam_policy_document.backup.json
}

resource "aws_backup_selection" "kurz" {
  name         = "${var.name}-table"
  plan_id      = aws_backup_plan.kurz.id
  iam_role_arn = aws_iam_role.backup.arn
  resources    = [local.table_arn]
}
