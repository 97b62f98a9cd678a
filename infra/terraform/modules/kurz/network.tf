# Security groups and VPC endpoints. The tasks need no internet access at all: DynamoDB and S3
# (ECR's image layers) through gateway endpoints, ECR, CloudWatch Logs, Secrets Manager and (with
# the click stream) Kinesis through interface endpoints, Redis inside the VPC. Each group allows
# only the flows below:
#
#   clients --80,443--> alb --8080--> tasks --6379--> redis
#                                      tasks --443--> endpoints (ECR, Logs, Secrets Manager, Kinesis)
#                                      tasks --443--> DynamoDB and S3 prefix lists (gateway endpoints)
#                   (nothing) --> aggregate --443--> endpoints (ECR, Logs, Kinesis)
#                                  aggregate --443--> DynamoDB and S3 prefix lists
#
# If the VPC already has these endpoints, remove the duplicates here or there: a route table
# takes one gateway endpoint per service.

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "kurz load balancer: HTTP and HTTPS from clients, to the kurz tasks only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-alb" })
}

resource "aws_security_group" "tasks" {
  name        = "${var.name}-tasks"
  description = "kurz tasks: from the load balancer; to Redis, the VPC endpoints, DynamoDB and S3"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-tasks" })
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "kurz Redis: from the kurz tasks only, no egress"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-redis" })
}

resource "aws_security_group" "aggregate" {
  count       = local.click_stream ? 1 : 0
  name        = "${var.name}-aggregate"
  description = "kurz aggregate tasks: no ingress; to the VPC endpoints, DynamoDB and S3"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-aggregate" })
}

resource "aws_security_group" "endpoints" {
  name        = "${var.name}-endpoints"
  description = "VPC interface endpoints used by kurz: HTTPS from the kurz tasks only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-endpoints" })
}

# --- load balancer ---

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each          = toset(var.alb_ingress_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from clients"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  #checkov:skip=CKV_AWS_260:Port 80 only answers a 301 to HTTPS (listener in alb.tf); closing it would break every short link typed or printed without https://.
  for_each          = toset(var.alb_ingress_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "HTTP from clients, redirected to HTTPS by the listener"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_tasks" {
  security_group_id            = aws_security_group.alb.id
  description                  = "Requests and health checks to the kurz tasks"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.tasks.id
}

# --- tasks ---

resource "aws_vpc_security_group_ingress_rule" "tasks_from_alb" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "HTTP from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_redis" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "Redis (TLS) cache tier"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.redis.id
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_endpoints" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "ECR, CloudWatch Logs and Secrets Manager through interface endpoints"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints.id
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_dynamodb" {
  security_group_id = aws_security_group.tasks.id
  description       = "DynamoDB through its gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = aws_vpc_endpoint.dynamodb.prefix_list_id
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_s3" {
  security_group_id = aws_security_group.tasks.id
  description       = "ECR image layers from S3 through its gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = aws_vpc_endpoint.s3.prefix_list_id
}

# --- aggregate (kurz aggregate): no ingress at all; its health check runs inside the task ---

resource "aws_vpc_security_group_egress_rule" "aggregate_to_endpoints" {
  count                        = local.click_stream ? 1 : 0
  security_group_id            = aws_security_group.aggregate[0].id
  description                  = "Kinesis, ECR and CloudWatch Logs through interface endpoints"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints.id
}

resource "aws_vpc_security_group_egress_rule" "aggregate_to_dynamodb" {
  count             = local.click_stream ? 1 : 0
  security_group_id = aws_security_group.aggregate[0].id
  description       = "DynamoDB through its gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = aws_vpc_endpoint.dynamodb.prefix_list_id
}

resource "aws_vpc_security_group_egress_rule" "aggregate_to_s3" {
  count             = local.click_stream ? 1 : 0
  security_group_id = aws_security_group.aggregate[0].id
  description       = "ECR image layers from S3 through its gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = aws_vpc_endpoint.s3.prefix_list_id
}

# --- redis and endpoints ---

resource "aws_vpc_security_group_ingress_rule" "redis_from_tasks" {
  security_group_id            = aws_security_group.redis.id
  description                  = "Redis from the kurz tasks"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.tasks.id
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_tasks" {
  security_group_id            = aws_security_group.endpoints.id
  description                  = "HTTPS from the kurz tasks"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.tasks.id
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_aggregate" {
  count                        = local.click_stream ? 1 : 0
  security_group_id            = aws_security_group.endpoints.id
  description                  = "HTTPS from the kurz aggregate tasks"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.aggregate[0].id
}

# --- endpoints ---

resource "aws_vpc_endpoint" "dynamodb" {
  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${local.region}.dynamodb"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.private_route_table_ids
  # Through this endpoint, principals of this account reach kurz's table and nothing else.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "KurzTableOnly"
      Effect    = "Allow"
      Principal = "*"
      Action    = sort(distinct(concat(local.kurz_dynamodb_actions, local.click_stream ? local.aggregate_dynamodb_actions : [])))
      Resource  = [local.table_arn, "${local.table_arn}/index/*"]
      Condition = { StringEquals = { "aws:PrincipalAccount" = local.account_id } }
    }]
  })
  tags = merge(local.tags, { Name = "${var.name}-dynamodb" })
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${local.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.private_route_table_ids
  # ECR keeps image layers in this AWS-owned bucket; nothing else is reachable through it.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "EcrImageLayersOnly"
      Effect    = "Allow"
      Principal = "*"
      Action    = ["s3:GetObject"]
      Resource  = ["arn:${local.partition}:s3:::prod-${local.region}-starport-layer-bucket/*"]
    }]
  })
  tags = merge(local.tags, { Name = "${var.name}-s3" })
}

resource "aws_vpc_endpoint" "interface" {
  # xray only with traces on (the collector sends spans there).
  for_each            = toset(concat(["ecr.api", "ecr.dkr", "logs", "secretsmanager"], local.traces ? ["xray"] : []))
  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = var.private_subnet_ids
  security_group_ids  = [aws_security_group.endpoints.id]
  tags                = merge(local.tags, { Name = "${var.name}-${replace(each.key, ".", "-")}" })
}

# Kinesis has no gateway endpoint. Through this one, principals of this account make kurz's calls
# on the click stream and nothing else.
resource "aws_vpc_endpoint" "kinesis" {
  count               = local.click_stream ? 1 : 0
  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${local.region}.kinesis-streams"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = var.private_subnet_ids
  security_group_ids  = [aws_security_group.endpoints.id]
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "KurzClickStreamOnly"
      Effect    = "Allow"
      Principal = "*"
      Action    = sort(distinct(concat(local.kurz_kinesis_actions, local.aggregate_kinesis_actions)))
      Resource  = [aws_kinesis_stream.clicks[0].arn]
      Condition = { StringEquals = { "aws:PrincipalAccount" = local.account_id } }
    }]
  })
  tags = merge(local.tags, { Name = "${var.name}-kinesis-streams" })
}

# The load balancers' subnets: kurz trusts forwarding headers only from their addresses.
# `count` over the list's length, not `for_each` over its ids: a root that makes the subnets in
# the same apply (examples/production) passes ids that are unknown until then, and for_each
# needs its keys at plan time; the length is known (scripts/check_tf_schema.py checks this).
data "aws_subnet" "public" {
  count = length(var.public_subnet_ids)
  id    = var.public_subnet_ids[count.index]
}

# --- several regions (variables.tf): the other regions' tasks reach this region's table, and
# this region's reach theirs, over VPC peering (made by the root: examples/production) ---
#
#   tasks --443--> streams endpoint (this region's table stream; endpoints group)
#   tasks --443--> peer VPC CIDRs (their DynamoDB interface endpoint)
#   peer VPC CIDRs --443--> dynamodb interface endpoint (peer_dynamodb group) --> this table
#
# The DynamoDB Streams API has interface endpoints only, without private DNS: kurz is given the
# endpoint's DNS name (KURZ__REGION__STREAM_ENDPOINT_URL, main.tf). The other regions are given
# this region's DynamoDB interface endpoint's (output dynamodb_interface_endpoint), which they
# reach by its private addresses through the peering; in this VPC, this region's own calls keep
# going through the gateway endpoint above.

resource "aws_vpc_endpoint" "dynamodb_streams" {
  count              = local.regions ? 1 : 0
  vpc_id             = var.vpc_id
  service_name       = "com.amazonaws.${local.region}.dynamodb-streams"
  vpc_endpoint_type  = "Interface"
  subnet_ids         = var.private_subnet_ids
  security_group_ids = [aws_security_group.endpoints.id]
  # Through this endpoint, principals of this account read kurz's table stream and nothing else.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "KurzTableStreamOnly"
      Effect    = "Allow"
      Principal = "*"
      Action    = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"]
      Resource  = "*"
      Condition = { StringEquals = { "aws:PrincipalAccount" = local.account_id } }
    }]
  })
  tags = merge(local.tags, { Name = "${var.name}-dynamodb-streams" })
}

resource "aws_security_group" "peer_dynamodb" {
  count       = local.regions ? 1 : 0
  name        = "${var.name}-peer-dynamodb"
  description = "DynamoDB interface endpoint for kurz's other regions: HTTPS from their VPCs only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-peer-dynamodb" })
}

resource "aws_vpc_security_group_ingress_rule" "peer_dynamodb_from_peers" {
  for_each          = local.regions ? var.peer_regions : {}
  security_group_id = aws_security_group.peer_dynamodb[0].id
  description       = "HTTPS from kurz's tasks in ${each.key}"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_peers" {
  for_each          = local.regions ? var.peer_regions : {}
  security_group_id = aws_security_group.tasks.id
  description       = "DynamoDB in ${each.key}, through its interface endpoint over the peering"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value.vpc_cidr
}

resource "aws_vpc_endpoint" "dynamodb_for_peers" {
  count              = local.regions ? 1 : 0
  vpc_id             = var.vpc_id
  service_name       = "com.amazonaws.${local.region}.dynamodb"
  vpc_endpoint_type  = "Interface"
  subnet_ids         = var.private_subnet_ids
  security_group_ids = [aws_security_group.peer_dynamodb[0].id]
  # The calls the other regions' kurz makes here (the same as kurz serve's), on this table only.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "KurzTableOnly"
      Effect    = "Allow"
      Principal = "*"
      Action    = local.kurz_dynamodb_actions
      Resource  = [local.table_arn, "${local.table_arn}/index/*"]
      Condition = { StringEquals = { "aws:PrincipalAccount" = local.account_id } }
    }]
  })
  tags = merge(local.tags, { Name = "${var.name}-dynamodb-for-peers" })
}
