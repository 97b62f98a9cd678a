# The one table kurz keeps everything in (docs/data-model.md): the same key schema and TTL
# attribute `kurz init` creates, so `kurz init` is not needed when Terraform owns the table.

resource "aws_dynamodb_table" "kurz" {
  name         = var.table_name
  billing_mode = "PAY_PER_REQUEST"
  table_class  = var.table_class
  hash_key     = "pk"
  range_key    = "sk"

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "S"
  }

  # Expired links and idempotency records are deleted by DynamoDB itself (epoch seconds).
  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.data.arn
  }

  deletion_protection_enabled = var.table_deletion_protection

  tags = local.tags
}
