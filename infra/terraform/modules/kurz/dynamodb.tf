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

  # The list indexes (`kurz init` makes the same): each owner's links, and every link, newest
  # first by `list_key`. Sharded partitions (`{owner}#{0-3}`, `{0-15}`) keep one busy key or
  # the create rate off a single index partition; see docs/data-model.md.
  attribute {
    name = "list_owner"
    type = "S"
  }

  attribute {
    name = "list_all"
    type = "S"
  }

  attribute {
    name = "list_key"
    type = "S"
  }

  global_secondary_index {
    name            = "by_owner"
    hash_key        = "list_owner"
    range_key       = "list_key"
    projection_type = "ALL"
  }

  global_secondary_index {
    name            = "by_created"
    hash_key        = "list_all"
    range_key       = "list_key"
    projection_type = "ALL"
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

  # Pre-warmed for the design peak (CAPACITY.md; local.table_warm_* in main.tf): on demand, a new
  # table takes 12,000 read and 4,000 write units a second at once and doubles its previous peak
  # within 30 minutes; a Redis failover sends every L1 miss to the table in one second. AWS
  # pre-warms only up to the account's per-table quotas (Service Quotas, default 40,000 read and
  # 40,000 write units a second): raise them first, or this apply fails (infra/README.md).
  dynamic "warm_throughput" {
    for_each = local.table_warm_read > 0 || local.table_warm_write > 0 ? [1] : []
    content {
      read_units_per_second  = local.table_warm_read > 0 ? local.table_warm_read : null
      write_units_per_second = local.table_warm_write > 0 ? local.table_warm_write : null
    }
  }

  deletion_protection_enabled = var.table_deletion_protection

  tags = local.tags
}
