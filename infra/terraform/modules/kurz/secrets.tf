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
}

resource "aws_secretsmanager_secret" "kurz" {
  #checkov:skip=CKV2_AWS_57:kurz reads these at start-up only, so a rotation is a value change plus a rolling deploy (procedure above), not a rotation Lambda; the Redis token must also change on ElastiCache in step.
  for_each                = local.secret_settings
  name                    = "${var.name}/${each.key}"
  description             = "kurz ${each.value}"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = 30
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "kurz" {
  for_each      = local.secret_settings
  secret_id     = aws_secretsmanager_secret.kurz[each.key].id
  secret_string = local.secret_values[each.key]
}
