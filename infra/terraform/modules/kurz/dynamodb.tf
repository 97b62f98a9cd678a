# The one table kurz keeps everything in (docs/data-model.md): the same key schema and TTL
# attribute `kurz init` creates, so `kurz init` is not needed when Terraform owns the table.
#
# With several regions (variables.tf) it is a global table: the primary region's module makes it
# with a replica in every other region (replica_data_key_arns), each encrypted with that region's
# replica of the data key, and the replica regions' modules use theirs. Its stream of new and
# old images is what global tables replicate from, and what each region's kurz reads to drop
# the links another region changed from its caches (docs/data-model.md).

resource "aws_dynamodb_table" "kurz" {
  count        = local.region_replica ? 0 : 1
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
    kms_key_arn = local.data_key_arn
  }

  stream_enabled   = local.regions
  stream_view_type = local.regions ? "NEW_AND_OLD_IMAGES" : null

  # Each replica is a full table in its region, written there by that region's kurz and
  # replicated both ways (last writer wins; kurz decides what must not be decided twice in one
  # home region, docs/data-model.md). Point-in-time recovery and deletion protection are per
  # replica.
  dynamic "replica" {
    for_each = var.replica_data_key_arns
    content {
      region_name                 = replica.key
      kms_key_arn                 = replica.value
      point_in_time_recovery      = true
      deletion_protection_enabled = var.table_deletion_protection
      propagate_tags              = true
    }
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

  lifecycle {
    precondition {
      condition     = local.regions || length(var.replica_data_key_arns) == 0
      error_message = "replica_data_key_arns makes a global table: set region_id (and peer_regions) too."
    }
    precondition {
      condition     = alltrue([for name in keys(var.replica_data_key_arns) : contains(keys(var.peer_regions), name)])
      error_message = "Every region in replica_data_key_arns must be in peer_regions."
    }
  }
}

moved {
  from = aws_dynamodb_table.kurz
  to   = aws_dynamodb_table.kurz[0]
}
