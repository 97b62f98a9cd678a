variable "region" {
  description = "AWS region to run kurz in."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "availability_zones" {
  description = "Availability zones (names, in var.region) to spread the VPC, the tasks and Redis over."
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b", "us-east-1c"]

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 4 && alltrue([for z in var.availability_zones : startswith(z, var.region)])
    error_message = "availability_zones must name 2 to 4 zones of var.region (e.g. us-east-1a)."
  }
}

variable "vpc_cidr" {
  description = "IPv4 range of the VPC (a /16 to /20: it is cut into /20-sized parts, up to 4 public and 4 private)."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be an IPv4 CIDR block from /16 to /20."
  }
}

variable "flow_log_traffic_type" {
  description = "VPC flow logs: REJECT (what the security groups refused; cheap) or ALL (every flow; at billions of requests a day, a real cost)."
  type        = string
  default     = "REJECT"

  validation {
    condition     = contains(["REJECT", "ALL"], var.flow_log_traffic_type)
    error_message = "flow_log_traffic_type must be REJECT or ALL."
  }
}

variable "public_base_url" {
  description = "Base of every short URL, e.g. https://kurz.example."
  type        = string

  validation {
    condition     = can(regex("^https://[A-Za-z0-9.-]+$", var.public_base_url))
    error_message = "public_base_url must be https://HOST, with no port, path or trailing slash."
  }
}

variable "certificate_arn" {
  description = "ACM certificate (in var.region) for the host of public_base_url."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone of public_base_url's host; when set, an alias record to the load balancer is made. Empty: make the DNS record yourself."
  type        = string
  default     = ""

  validation {
    condition     = var.route53_zone_id == "" || can(regex("^Z[A-Z0-9]{5,31}$", var.route53_zone_id))
    error_message = "route53_zone_id must be empty or a hosted zone id (Z...)."
  }
}

variable "image_tag" {
  description = "Tag of the kurz image in the ECR repository this root creates (tags are immutable: one per build, e.g. the git commit)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag)) && var.image_tag != "latest"
    error_message = "image_tag must be a Docker tag other than 'latest'."
  }
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64: what the image was built for."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "api_clients" {
  description = "Names of the API clients that get a key."
  type        = list(string)
  default     = ["default"]

  validation {
    condition     = length(var.api_clients) >= 1
    error_message = "api_clients needs at least one name (no keys would open creation to anyone)."
  }
}

variable "alarm_emails" {
  description = "Addresses that get the alarms."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.alarm_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "alarm_emails must be email addresses."
  }
}

variable "min_tasks" {
  description = "Fewest kurz tasks."
  type        = number
  default     = 3

  validation {
    condition     = var.min_tasks >= 2
    error_message = "min_tasks must be at least 2."
  }
}

variable "max_tasks" {
  description = "Most kurz tasks (CAPACITY.md: the 100M-links-a-day peak needs 15 to 22 tasks of 2 vCPU; 22 / (2/3) x 2 = 66 holds them with one zone of three lost and a 2x burst)."
  type        = number
  default     = 66

  validation {
    condition     = var.max_tasks >= 2
    error_message = "max_tasks must be at least 2."
  }
}

variable "click_sink" {
  description = "Where the tasks' clicks go: kinesis (a stream, written to the table by kurz aggregate once per link per window) or store (each task writes them). At the 10 billion redirects a day this root is sized for, kinesis: per-task writes need ~810,000 write units a second, 20 times the table's default quota (CAPACITY.md, 5a)."
  type        = string
  default     = "kinesis"

  validation {
    condition     = contains(["store", "kinesis"], var.click_sink)
    error_message = "click_sink must be store or kinesis."
  }
}

variable "click_stream_shards" {
  description = "Shards of the click stream: 64 carry the peak of 10 billion clicks a day (~257,000 events, 32.4 MB a second) at half of the shards' 1 MiB/s write limit (the module's variables.tf shows the arithmetic)."
  type        = number
  default     = 64

  validation {
    condition     = var.click_stream_shards >= 1
    error_message = "click_stream_shards must be at least 1."
  }
}

variable "backup_copy_region" {
  description = "Region the table's daily backups are copied to (a vault-locked vault made here); not var.region."
  type        = string
  default     = "us-west-2"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.backup_copy_region)) && var.backup_copy_region != var.region
    error_message = "backup_copy_region must be an AWS region name other than var.region."
  }
}

variable "backup_copy_account_vault_arn" {
  description = "A backup vault in another account to copy the daily backups to as well (its vault policy must allow backup:CopyIntoBackupVault from this account; with AWS Organizations, cross-account backup must be on). Empty: none."
  type        = string
  default     = ""

  validation {
    condition     = var.backup_copy_account_vault_arn == "" || can(regex("^arn:aws[a-z-]*:backup:[a-z0-9-]+:[0-9]{12}:backup-vault:.+$", var.backup_copy_account_vault_arn))
    error_message = "backup_copy_account_vault_arn must be empty or a backup vault ARN."
  }
}

variable "traces_sample_ratio" {
  description = "Share of requests traced into X-Ray through the collector beside each task (0: no traces)."
  type        = number
  default     = 0.001
}

# --- Two regions, active-active (infra/README.md: the bootstrap order, in five applies) ---
# This root is applied once per region, each with its own state (backend key) and tfvars.

variable "kurz_region" {
  description = "This region's place among kurz's regions: its number (0-7) and its role (\"primary\": makes the global table, the multi-Region data key and the shared secrets; \"replica\": uses their replicas here). null: a single-region deployment."
  type = object({
    id   = number
    role = string
  })
  default = null
}

variable "name" {
  description = "The prefix of the resources' names. null: \"kurz\", or \"kurz-REGION\" with kurz_region set (IAM role names are global). A deployment that already runs in one region keeps \"kurz\" when it becomes the primary of two (infra/README.md, \"From one region to two\")."
  type        = string
  default     = null
}

variable "retiring_data_key_arn" {
  description = "While the data key is being replaced (infra/README.md, \"From one region to two\"): the old key, which the roles may still use until it is retired. null: none."
  type        = string
  default     = null
}

variable "peer" {
  description = "The other region (with kurz_region set), from its root's outputs (terraform output -json there): its AWS region and kurz number, its VPC (id, IPv4 range, private route tables: the replica's root makes the peering and the routes on both sides), and, once its own apply made them, its dynamodb_interface_endpoint and data_key_arn and, for a replica, the primary's secret_arns. null: no other region yet."
  type = object({
    region                  = string
    id                      = number
    vpc_id                  = string
    vpc_cidr                = string
    private_route_table_ids = list(string)
    dynamodb_endpoint       = optional(string)
    data_key_arn            = optional(string)
    secret_arns             = optional(map(string), {})
  })
  default = null

  validation {
    condition     = var.peer == null || try(can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.peer.region)) && var.peer.region != var.region, false)
    error_message = "peer.region must be another AWS region name than region."
  }
}
