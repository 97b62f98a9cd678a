output "url" {
  description = "Where kurz answers once DNS points at the load balancer."
  value       = var.public_base_url
}

output "alb_dns_name" {
  description = "The load balancer's DNS name (the target of the DNS record)."
  value       = module.kurz.alb_dns_name
}

output "api_url" {
  description = "Where the API, the home page and the admin pages answer (behind the WAF)."
  value       = "https://${module.kurz.api_host}"
}

output "api_alb_dns_name" {
  description = "The API load balancer's DNS name (the target of the api. record)."
  value       = module.kurz.api_alb_dns_name
}

output "ecr_repository_url" {
  description = "Push the kurz image here: docker push <this>:<tag>."
  value       = aws_ecr_repository.kurz.repository_url
}

output "cluster_name" {
  description = "The ECS cluster."
  value       = module.kurz.cluster_name
}

output "service_name" {
  description = "The ECS service."
  value       = module.kurz.service_name
}

output "table_name" {
  description = "The DynamoDB table."
  value       = module.kurz.table_name
}

output "redis_primary_endpoint" {
  description = "The Redis primary endpoint."
  value       = module.kurz.redis_primary_endpoint
}

output "log_group_name" {
  description = "kurz's log group."
  value       = module.kurz.log_group_name
}

output "secret_arns" {
  description = "Secrets Manager ARNs: admin_token, api_keys, permutation_key, redis_url."
  value       = module.kurz.secret_arns
}

output "click_stream_name" {
  description = "The click stream (null with click_sink = \"store\")."
  value       = module.kurz.click_stream_name
}

output "aggregate_service_name" {
  description = "The kurz aggregate ECS service (null with click_sink = \"store\")."
  value       = module.kurz.aggregate_service_name
}

output "backup_role_arn" {
  description = "The role AWS Backup backs the table up with; restore drills use it (infra/README.md)."
  value       = module.kurz.backup_role_arn
}
