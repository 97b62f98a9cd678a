# The shared L2 cache: Redis OSS on ElastiCache, a primary and var.redis_replicas replicas in
# other availability zones, automatic failover, TLS and AUTH, evicting least recently used keys
# when full (kurz warns at start-up when it cannot confirm the policy: ElastiCache disables
# CONFIG, so expect that warning; this parameter group is what sets it).

resource "aws_elasticache_parameter_group" "kurz" {
  name        = "${var.name}-redis7-lru"
  family      = "redis7"
  description = "kurz cache: evict least recently used keys when full"

  parameter {
    name  = "maxmemory-policy"
    value = "allkeys-lru"
  }

  tags = local.tags
}

resource "aws_elasticache_subnet_group" "kurz" {
  name        = "${var.name}-cache"
  description = "kurz cache: private subnets"
  subnet_ids  = var.private_subnet_ids
  tags        = local.tags
}

# No '@', '"' or '/' (ElastiCache), and safe in a URL without escaping (the redis URL secret).
resource "random_password" "redis_auth" {
  length  = 64
  special = false
}

resource "aws_elasticache_replication_group" "kurz" {
  replication_group_id = local.redis_group_id
  description          = "kurz shared cache (allkeys-lru)"
  engine               = "redis"
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  port                 = 6379
  parameter_group_name = aws_elasticache_parameter_group.kurz.name
  subnet_group_name    = aws_elasticache_subnet_group.kurz.name
  security_group_ids   = [aws_security_group.redis.id]

  num_cache_clusters         = var.redis_replicas + 1
  automatic_failover_enabled = true
  multi_az_enabled           = true

  at_rest_encryption_enabled = true
  kms_key_id                 = local.data_key_arn
  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = random_password.redis_auth.result
  # ROTATE keeps the old token valid beside a new one while tasks pick up the new secret.
  auth_token_update_strategy = "ROTATE"

  # A cache: losing it costs store reads, not data. One daily snapshot is enough to warm a
  # replacement faster than from empty.
  snapshot_retention_limit   = 1
  snapshot_window            = "03:00-04:00"
  maintenance_window         = "sun:04:30-sun:05:30"
  auto_minor_version_upgrade = true
  apply_immediately          = false

  tags = local.tags
}
