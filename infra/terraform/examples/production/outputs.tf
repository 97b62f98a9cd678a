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

output "data_key_arn" {
  description = "The data key (with kurz_region: a multi-Region key, or this region's replica of the primary's)."
  value       = module.kurz.data_key_arn
}

output "as_peer" {
  description = "With kurz_region set: this region as the other region's root takes it in its variable peer (terraform output -json as_peer here, into the other's tfvars). Its dynamodb_endpoint is null until this region's full apply made the endpoint."
  value = var.kurz_region == null ? null : {
    region                  = var.region
    id                      = var.kurz_region.id
    vpc_id                  = aws_vpc.kurz.id
    vpc_cidr                = var.vpc_cidr
    private_route_table_ids = aws_route_table.private[*].id
    dynamodb_endpoint       = module.kurz.dynamodb_interface_endpoint
    data_key_arn            = module.kurz.data_key_arn
    secret_arns             = module.kurz.secret_arns
  }
}
