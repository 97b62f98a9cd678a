output "alb_dns_name" {
  description = "DNS name of the redirect host's load balancer (no WAF): point the public_base_url host at it (alias or CNAME)."
  value       = aws_lb.kurz.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone of the load balancer, for an alias record."
  value       = aws_lb.kurz.zone_id
}

output "api_host" {
  description = "Host name of the API, the home page and the admin pages."
  value       = local.api_host
}

output "api_alb_dns_name" {
  description = "DNS name of the API's load balancer (behind the WAF): point api_host at it."
  value       = aws_lb.api.dns_name
}

output "api_alb_zone_id" {
  description = "Hosted zone of the API's load balancer, for an alias record."
  value       = aws_lb.api.zone_id
}

output "backup_vault_name" {
  description = "The table's AWS Backup vault (vault-locked)."
  value       = aws_backup_vault.kurz.name
}

output "backup_role_arn" {
  description = "The role AWS Backup uses: also the one to restore with (into a table named TABLE-restore-*)."
  value       = aws_iam_role.backup.arn
}

output "table_name" {
  description = "The DynamoDB table."
  value       = aws_dynamodb_table.kurz.name
}

output "redis_primary_endpoint" {
  description = "Primary endpoint of the Redis replication group (TLS, AUTH: the full URL is in the redis_url secret)."
  value       = aws_elasticache_replication_group.kurz.primary_endpoint_address
}

output "cluster_name" {
  description = "The ECS cluster."
  value       = aws_ecs_cluster.kurz.name
}

output "service_name" {
  description = "The ECS service."
  value       = aws_ecs_service.kurz.name
}

output "log_group_name" {
  description = "kurz's log group (JSON lines)."
  value       = aws_cloudwatch_log_group.kurz.name
}

output "alarm_topic_arn" {
  description = "SNS topic every alarm publishes to."
  value       = aws_sns_topic.alarms.arn
}

output "secret_arns" {
  description = "Secrets Manager ARNs by name: admin_token, api_keys, permutation_key, redis_url."
  value       = { for k, s in aws_secretsmanager_secret.kurz : k => s.arn }
}

output "logs_kms_key_arn" {
  description = "KMS key for log groups in this account (the example encrypts its VPC flow logs with it)."
  value       = aws_kms_key.logs.arn
}

output "click_stream_name" {
  description = "The click stream (click_sink = \"kinesis\"; null otherwise)."
  value       = one(aws_kinesis_stream.clicks[*].name)
}

output "aggregate_service_name" {
  description = "The kurz aggregate ECS service (click_sink = \"kinesis\"; null otherwise)."
  value       = one(aws_ecs_service.aggregate[*].name)
}

output "aggregate_log_group_name" {
  description = "kurz aggregate's log group, JSON lines (click_sink = \"kinesis\"; null otherwise)."
  value       = one(aws_cloudwatch_log_group.aggregate[*].name)
}
