# kurz's secrets, generated once and kept in Secrets Manager (encrypted with the data key). The
# task definition hands them to kurz as environment variables (`secrets` in ecs.tf); only the
# task execution role may read them. Their values are also in the Terraform state: keep the
# state in an encrypted, access-controlled backend (see infra/terraform/README.md).
#
# Rotating one: change it (taint the random_password, or put a new value), then deploy (kurz
# reads secrets at start-up). For the Redis token, ElastiCache keeps the old token valid during
# the rolling deploy (auth_token_update_strategy = ROTATE).

resource "random_password" "admin_token" {
  length  = 48
  special = false
}

resource "random_password" "permutation_key" {
  # Changing it later changes which codes future ids map to: set once, keep.
  length  = 64
  special = false
}

resource "random_password" "api_key" {
  for_each = toset(var.api_clients)
  length   = 48
  special  = false
}

locals {
  secret_values = {
    admin_token     = random_password.admin_token.result
    api_keys        = join(",", [for client in sort(var.api_clients) : random_password.api_key[client].result])
    permutation_key = random_password.permutation_key.result
    redis_url       = "rediss://:${random_password.redis_auth.result}@${aws_elasticache_replication_group.kurz.primary_endpoint_address}:6379"
  }
  # Secret name -> the kurz setting it becomes.
  secret_settings = {
    admin_token     = "KURZ__AUTH__ADMIN_TOKEN"
    api_keys        = "KURZ__AUTH__API_KEYS"
    permutation_key = "KURZ__IDS__PERMUTATION_KEY"
    redis_url       = "KURZ__CACHE__REDIS__URL"
  }

  # With several regions, one admin token, one set of API keys and one permutation key serve
  # every region (a client is routed to either; a code must map to the same id everywhere):
  # the primary's secrets, replicated to each other region. The Redis URL is each region's own.
  # A replica region's module makes only that one, and reads the others' replicas, which have
  # the primary's ARN with this region in it. (Its random_passwords above stay, unused, so a
  # single-region state keeps its addresses.)
  shared_secrets = local.regions ? ["admin_token", "api_keys", "permutation_key"] : []
  own_secrets    = { for k, v in local.secret_settings : k => v if !(local.region_replica && contains(local.shared_secrets, k)) }
  secret_arns = merge(
    { for k, s in aws_secretsmanager_secret.kurz : k => s.arn },
    local.region_replica ? {
      for k in local.shared_secrets : k => join(":", [for i, part in split(":", lookup(var.primary_secret_arns, k, "")) : i == 3 ? local.region : part])
    } : {},
  )
}

resource "aws_secretsmanager_secret" "kurz" {
  #checkov:skip=CKV2_AWS_57:kurz reads these at start-up only, so a rotation is a value change plus a rolling deploy (procedure above), not a rotation Lambda; the Redis token must also change on ElastiCache in step.
  for_each                = local.own_secrets
  name                    = "${var.name}/${each.key}"
  description             = "kurz ${each.value}"
  kms_key_id              = local.data_key_arn
  recovery_window_in_days = 30
  tags                    = local.tags

  # The shared ones, in every other region, under that region's replica of the data key.
  dynamic "replica" {
    for_each = contains(local.shared_secrets, each.key) ? var.replica_data_key_arns : {}
    content {
      region     = replica.key
      kms_key_id = replica.value
    }
  }

  lifecycle {
    precondition {
      condition     = !local.region_replica || alltrue([for k in local.shared_secrets : can(regex("^arn:[^:]+:secretsmanager:[^:]+:[0-9]{12}:secret:", lookup(var.primary_secret_arns, k, "")))])
      error_message = "region_role = \"replica\" needs primary_secret_arns: the primary region's module output secret_arns (admin_token, api_keys, permutation_key)."
    }
  }
}

resource "aws_secretsmanager_secret_version" "kurz" {
  for_each      = local.own_secrets
  secret_id     = aws_secretsmanager_secret.kurz[each.key].id
  secret_string = local.secret_values[each.key]
}
