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
  value       = local.table_name
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
  value       = local.secret_arns
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

# --- several regions (region_id set; null otherwise) ---

output "data_key_arn" {
  description = "The data key here (a multi-Region key, or this region's replica of the primary's): the primary's module takes each replica region's in replica_data_key_arns, a replica region's module takes the primary's as primary_data_key_arn."
  value       = local.data_key_arn
}

output "dynamodb_interface_endpoint" {
  description = "DNS name of the DynamoDB interface endpoint the other regions' kurz reach this region's table by, over VPC peering: their peer_regions[<this region>].dynamodb_endpoint."
  value       = one(aws_vpc_endpoint.dynamodb_for_peers[*].dns_entry[0].dns_name)
}

output "store_health_check_id" {
  description = "Route 53 health check that fails while this region's link store does not answer: the health_check_id of this region's latency records."
  value       = one(aws_route53_health_check.store[*].id)
}
