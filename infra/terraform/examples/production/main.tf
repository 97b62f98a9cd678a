# kurz in production, from an empty account: a VPC over the availability zones named (public
# subnets for the load balancer, private subnets without any internet route for the tasks and
# Redis), the ECR repository the image is pushed to, and the kurz module.

# Exactly the zones named, so the layout never changes when AWS adds a zone to the region.
data "aws_availability_zones" "chosen" {
  state = "available"

  filter {
    name   = "zone-name"
    values = var.availability_zones
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) == length(var.availability_zones)
      error_message = "Every zone in availability_zones must exist and be available in the region."
    }
  }
}

locals {
  azs      = var.availability_zones
  az_count = length(var.availability_zones)
  host     = regex("^https://([^/:]+)", var.public_base_url)[0]

  # Two regions: names of global resources (IAM roles) carry the region; one region keeps the
  # names it always had.
  name        = var.name != null ? var.name : var.kurz_region == null ? "kurz" : "kurz-${var.region}"
  region_role = try(var.kurz_region.role, "primary")
  # Two regions: kurz is told of the other once its endpoint exists.
  peer_known = var.kurz_region != null && try(var.peer.dynamodb_endpoint, null) != null
  # The replica region's root peers the two VPCs (requester here, accepter there).
  peering        = var.kurz_region != null && var.peer != null && try(var.kurz_region.role, "") == "replica"
  shorter_prefix = var.peer == null ? 0 : min(tonumber(split("/", var.vpc_cidr)[1]), tonumber(split("/", var.peer.vpc_cidr)[1]))
}

# --- network ---

resource "aws_vpc" "kurz" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true # the interface endpoints' private DNS names need both
  tags                 = { Name = "kurz" }
}

# Nothing may use the default security group.
resource "aws_default_security_group" "locked" {
  vpc_id = aws_vpc.kurz.id
  tags   = { Name = "kurz-default-unused" }
}

resource "aws_internet_gateway" "kurz" {
  vpc_id = aws_vpc.kurz.id
  tags   = { Name = "kurz" }
}

resource "aws_subnet" "public" {
  count                   = local.az_count
  vpc_id                  = aws_vpc.kurz.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, count.index)
  map_public_ip_on_launch = false
  tags                    = { Name = "kurz-public-${local.azs[count.index]}" }
}

resource "aws_subnet" "private" {
  count             = local.az_count
  vpc_id            = aws_vpc.kurz.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, 8 + count.index)
  tags              = { Name = "kurz-private-${local.azs[count.index]}" }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.kurz.id
  tags   = { Name = "kurz-public" }
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.kurz.id
}

resource "aws_route_table_association" "public" {
  count          = local.az_count
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# Private subnets have no route out: the module's gateway endpoints (DynamoDB, S3) add theirs.
resource "aws_route_table" "private" {
  count  = local.az_count
  vpc_id = aws_vpc.kurz.id
  tags   = { Name = "kurz-private-${local.azs[count.index]}" }
}

resource "aws_route_table_association" "private" {
  count          = local.az_count
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

# --- VPC flow logs ---

resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/vpc/kurz/flow-logs"
  retention_in_days = 365
  kms_key_id        = module.kurz.logs_kms_key_arn
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${local.name}-vpc-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}

resource "aws_flow_log" "kurz" {
  vpc_id          = aws_vpc.kurz.id
  traffic_type    = var.flow_log_traffic_type
  log_destination = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn    = aws_iam_role.flow_logs.arn
}

# --- image repository ---

resource "aws_ecr_repository" "kurz" {
  name                 = "kurz"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
  }
}

resource "aws_ecr_lifecycle_policy" "kurz" {
  repository = aws_ecr_repository.kurz.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the last 100 images (rollback targets)"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 100
      }
      action = { type = "expire" }
    }]
  })
}

# --- kurz ---

module "kurz" {
  source = "../../modules/kurz"
  name   = local.name

  vpc_id                  = aws_vpc.kurz.id
  public_subnet_ids       = aws_subnet.public[*].id
  private_subnet_ids      = aws_subnet.private[*].id
  private_route_table_ids = aws_route_table.private[*].id

  image              = "${aws_ecr_repository.kurz.repository_url}:${var.image_tag}"
  ecr_repository_arn = aws_ecr_repository.kurz.arn
  cpu_architecture   = var.cpu_architecture
  public_base_url    = var.public_base_url
  certificate_arn    = var.certificate_arn
  api_clients        = var.api_clients
  alarm_emails       = var.alarm_emails
  min_tasks          = var.min_tasks
  max_tasks          = var.max_tasks

  click_sink          = var.click_sink
  click_stream_shards = var.click_stream_shards

  # Requests traced into X-Ray (0.1% by default: ~$1,500 a month at the design's peak,
  # infra/CAPACITY.md section 8).
  traces_sample_ratio = var.traces_sample_ratio

  # The daily backups, copied to a vault in another region and, when set, another account's.
  # A list of known length (one, or two), whatever the ARNs.
  backup_copy_vault_arns = concat([aws_backup_vault.copy.arn], var.backup_copy_account_vault_arn == "" ? [] : [var.backup_copy_account_vault_arn])

  # Two regions (variables.tf): this one's number and role, and the other as far as it is
  # known yet (the bootstrap order in infra/README.md fills it in step by step).
  region_id   = try(var.kurz_region.id, null)
  region_role = local.region_role
  peer_regions = local.peer_known ? {
    (var.peer.region) = { id = var.peer.id, dynamodb_endpoint = var.peer.dynamodb_endpoint, vpc_cidr = var.peer.vpc_cidr }
  } : {}
  replica_data_key_arns = local.region_role == "primary" && try(var.peer.data_key_arn, null) != null ? { (var.peer.region) = var.peer.data_key_arn } : {}
  primary_data_key_arn  = local.region_role == "replica" ? try(var.peer.data_key_arn, null) : null
  primary_secret_arns   = local.region_role == "replica" ? try(var.peer.secret_arns, {}) : {}
  retiring_data_key_arn = var.retiring_data_key_arn

  tags = { environment = "production" }
}

# --- backups: AWS Backup's advanced DynamoDB features, and the vault in the other region ---

# An account setting, per region: AWS Backup manages DynamoDB backups itself (its own vault,
# encryption with the vault's key, copies to other regions and accounts, vault lock). Without
# it the module's copy actions and vault lock do not apply to the table's backups.
resource "aws_backup_region_settings" "kurz" {
  resource_type_opt_in_preference = {
    "DynamoDB" = true
  }
  resource_type_management_preference = {
    "DynamoDB" = true
  }
}

resource "aws_backup_region_settings" "copy" {
  provider = aws.backup_copy
  resource_type_opt_in_preference = {
    "DynamoDB" = true
  }
  resource_type_management_preference = {
    "DynamoDB" = true
  }
}

data "aws_caller_identity" "current" {}

resource "aws_kms_key" "backup_copy" {
  provider                = aws.backup_copy
  description             = "kurz: the copy of the table's backups in ${var.backup_copy_region}"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AccountAdministersThroughIAM"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
}

resource "aws_backup_vault" "copy" {
  provider      = aws.backup_copy
  name          = "${local.name}-table-copy"
  kms_key_arn   = aws_kms_key.backup_copy.arn
  force_destroy = false
}

resource "aws_backup_vault_lock_configuration" "copy" {
  provider            = aws.backup_copy
  backup_vault_name   = aws_backup_vault.copy.name
  changeable_for_days = 3
  min_retention_days  = 7
  max_retention_days  = 365
}

# --- DNS (optional) ---

# With two regions both records are latency records, one per region: Route 53 answers with the
# region nearest the user among the healthy ones. Healthy: its load balancer has a healthy
# target (evaluate_target_health) and its link store answers (the module's store health check;
# not /readyz, which stays up on purpose while the store is down). Turning a single-region
# record into a latency record replaces it: a short gap in DNS answers, so do it at a quiet time.
resource "aws_route53_record" "kurz" {
  count           = var.route53_zone_id == "" ? 0 : 1
  zone_id         = var.route53_zone_id
  name            = local.host
  type            = "A"
  set_identifier  = var.kurz_region == null ? null : var.region
  health_check_id = var.kurz_region == null ? null : module.kurz.store_health_check_id

  dynamic "latency_routing_policy" {
    for_each = var.kurz_region == null ? [] : [var.region]
    content {
      region = latency_routing_policy.value
    }
  }

  alias {
    name                   = module.kurz.alb_dns_name
    zone_id                = module.kurz.alb_zone_id
    evaluate_target_health = true
  }
}

# The API host (creates, the link API, the home page): its own load balancer, behind the WAF.
resource "aws_route53_record" "api" {
  count           = var.route53_zone_id == "" ? 0 : 1
  zone_id         = var.route53_zone_id
  name            = module.kurz.api_host
  type            = "A"
  set_identifier  = var.kurz_region == null ? null : var.region
  health_check_id = var.kurz_region == null ? null : module.kurz.store_health_check_id

  dynamic "latency_routing_policy" {
    for_each = var.kurz_region == null ? [] : [var.region]
    content {
      region = latency_routing_policy.value
    }
  }

  alias {
    name                   = module.kurz.api_alb_dns_name
    zone_id                = module.kurz.api_alb_zone_id
    evaluate_target_health = true
  }
}

# --- two regions: the VPC peering (made by the replica region's root, both sides) ---
# kurz in each region reaches the other's table through the other's DynamoDB interface
# endpoint, by its private addresses: the two VPCs are peered and each private route table
# sends the other VPC's range through the peering. The two ranges must not overlap.

resource "aws_vpc_peering_connection" "regions" {
  count       = local.peering ? 1 : 0
  vpc_id      = aws_vpc.kurz.id
  peer_vpc_id = var.peer.vpc_id
  peer_region = var.peer.region
  tags        = { Name = "kurz-${var.region}-${var.peer.region}" }

  lifecycle {
    precondition {
      # Two blocks overlap when their networks agree on the shorter prefix of the two.
      condition = (cidrhost("${cidrhost(var.vpc_cidr, 0)}/${local.shorter_prefix}", 0)
      != cidrhost("${cidrhost(var.peer.vpc_cidr, 0)}/${local.shorter_prefix}", 0))
      error_message = "vpc_cidr and peer.vpc_cidr overlap: peered VPCs need disjoint ranges."
    }
  }
}

resource "aws_vpc_peering_connection_accepter" "regions" {
  count                     = local.peering ? 1 : 0
  provider                  = aws.peer
  vpc_peering_connection_id = aws_vpc_peering_connection.regions[0].id
  auto_accept               = true
  tags                      = { Name = "kurz-${var.peer.region}-${var.region}" }
}

resource "aws_route" "to_peer" {
  count                     = local.peering ? local.az_count : 0
  route_table_id            = aws_route_table.private[count.index].id
  destination_cidr_block    = var.peer.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection_accepter.regions[0].id
}

resource "aws_route" "from_peer" {
  count                     = local.peering ? length(var.peer.private_route_table_ids) : 0
  provider                  = aws.peer
  route_table_id            = var.peer.private_route_table_ids[count.index]
  destination_cidr_block    = var.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection_accepter.regions[0].id
}
