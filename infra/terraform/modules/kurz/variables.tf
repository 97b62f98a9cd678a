# Inputs of the kurz module. Every default is a production default; the arithmetic behind the
# sizing defaults is in infra/CAPACITY.md.

# --- naming and placement ------------------------------------------------------------------

variable "name" {
  description = "Prefix of every resource name (load balancer, cluster, service, secrets, alarms)."
  type        = string
  default     = "kurz"

  validation {
    # The load balancer and target group names add up to 11 characters to it; AWS allows 32.
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name))
    error_message = "name must be 2-20 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC to run in (its DNS support and DNS hostnames must be on, for the interface endpoints)."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "public_subnet_ids" {
  description = "Subnets of the internet-facing load balancer, one per availability zone (at least two zones)."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2 && alltrue([for s in var.public_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "public_subnet_ids needs at least two subnet ids (subnet-...), in different availability zones."
  }
}

variable "private_subnet_ids" {
  description = "Subnets of the kurz tasks, Redis and the interface endpoints; no public IPs, no internet route needed."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2 && alltrue([for s in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "private_subnet_ids needs at least two subnet ids (subnet-...), in different availability zones."
  }
}

variable "private_route_table_ids" {
  description = "Route tables of the private subnets: the DynamoDB and S3 gateway endpoints add their routes to them."
  type        = list(string)

  validation {
    condition     = length(var.private_route_table_ids) >= 1 && alltrue([for r in var.private_route_table_ids : can(regex("^rtb-[0-9a-f]{8,17}$", r))])
    error_message = "private_route_table_ids needs at least one route table id (rtb-...)."
  }
}

variable "tags" {
  description = "Tags added to every resource of the module that takes tags."
  type        = map(string)
  default     = {}
}

# --- the service -----------------------------------------------------------------------------

variable "image" {
  description = "The kurz image, by immutable tag or digest: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/kurz:1f2e3d4 or ...@sha256:<64 hex>."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$", var.image)) && !endswith(var.image, ":latest")
    error_message = "image must name a registry, a repository and a tag (not 'latest') or a sha256 digest."
  }
}

variable "ecr_repository_arn" {
  description = "ARN of the ECR repository the image is pulled from: the execution role may pull from it and no other."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:ecr:[a-z0-9-]+:[0-9]{12}:repository/.+$", var.ecr_repository_arn))
    error_message = "ecr_repository_arn must be an ECR repository ARN (arn:aws:ecr:REGION:ACCOUNT:repository/NAME)."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture the image was built for: X86_64 or ARM64."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "task_cpu" {
  description = "CPU units per task (1024 = 1 vCPU). kurz runs one HTTP worker per vCPU."
  type        = number
  default     = 2048

  validation {
    condition     = contains([1024, 2048, 4096, 8192, 16384], var.task_cpu)
    error_message = "task_cpu must be one of 1024, 2048, 4096, 8192, 16384 (whole vCPUs)."
  }
}

variable "task_memory" {
  description = "Memory per task in MiB; must be a Fargate size for task_cpu (local.fargate_memory_by_cpu in main.tf: 2048 CPU units take 4096-16384 in steps of 1024)."
  type        = number
  default     = 4096

  validation {
    condition     = var.task_memory >= 2048 && var.task_memory <= 122880 && var.task_memory % 1024 == 0
    error_message = "task_memory must be a whole number of GiB (in MiB), from 2048 to 122880."
  }
}

variable "local_cache_bytes" {
  description = "kurz's in-process cache budget (KURZ__CACHE__LOCAL__MAX_BYTES): about 560 bytes per cached link. Keep it under half the task memory."
  type        = number
  default     = 1073741824

  validation {
    condition     = var.local_cache_bytes >= 0 && floor(var.local_cache_bytes) == var.local_cache_bytes
    error_message = "local_cache_bytes must be a whole, non-negative number of bytes."
  }
}

variable "local_cache_ttl_ms" {
  description = "KURZ__CACHE__LOCAL__TTL_MS: how long a task keeps a link in its in-process cache. At fleet scale this TTL, not memory, limits the L1 hit ratio (CAPACITY.md); deletes reach every task at once through Redis, so only a Redis outage makes a deleted link live this long elsewhere."
  type        = number
  default     = 60000

  validation {
    condition     = var.local_cache_ttl_ms >= 1000 && var.local_cache_ttl_ms <= 3600000
    error_message = "local_cache_ttl_ms must be between 1000 (1 s) and 3600000 (1 h)."
  }
}

variable "public_base_url" {
  description = "Base of every short URL, e.g. https://kurz.example (the name the certificate covers)."
  type        = string

  validation {
    condition     = can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?$", var.public_base_url))
    error_message = "public_base_url must be https://HOST (optionally :PORT), with no path and no trailing slash."
  }
}

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener, for the host in public_base_url."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "api_host" {
  description = "Host name of the API, the home page and the admin pages, on a load balancer of its own behind the WAF; short links stay on public_base_url's host, on one without it (CAPACITY.md section 8). null: api. + that host. DNS must point it at api_alb_dns_name."
  type        = string
  default     = null

  validation {
    condition     = var.api_host == null || can(regex("^[A-Za-z0-9.-]+$", var.api_host))
    error_message = "api_host must be a host name (no scheme, port or path)."
  }
}

variable "api_certificate_arn" {
  description = "ACM certificate of the API host's HTTPS listener. null: certificate_arn, which must then cover the API host too (a second name or a wildcard)."
  type        = string
  default     = null

  validation {
    condition     = var.api_certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]+$", var.api_certificate_arn))
    error_message = "api_certificate_arn must be null or an ACM certificate ARN."
  }
}

variable "api_clients" {
  description = "Names of the API clients to make an API key for (KURZ__AUTH__API_KEYS). Keys are generated; read them from Secrets Manager."
  type        = list(string)
  default     = ["default"]

  validation {
    condition     = length(var.api_clients) >= 1 && alltrue([for c in var.api_clients : can(regex("^[a-z0-9][a-z0-9_-]{0,39}$", c))])
    error_message = "api_clients needs at least one name of 1-40 characters of a-z, 0-9, '_' and '-' (an empty list would open creation to anyone)."
  }
}

variable "store_timeout_ms" {
  description = "KURZ__STORE__TIMEOUT_MS: longest a DynamoDB call may take, retries included, before the request answers 503."
  type        = number
  default     = 3000

  validation {
    condition     = var.store_timeout_ms >= 100 && var.store_timeout_ms <= 30000
    error_message = "store_timeout_ms must be between 100 and 30000."
  }
}

variable "clicks_flush_interval_ms" {
  description = "KURZ__CLICKS__FLUSH_INTERVAL_MS: how often each task writes its click counts (see CAPACITY.md for what it costs in DynamoDB writes)."
  type        = number
  default     = 1000

  validation {
    condition     = var.clicks_flush_interval_ms >= 100 && var.clicks_flush_interval_ms <= 300000
    error_message = "clicks_flush_interval_ms must be between 100 and 300000."
  }
}

variable "traces_sample_ratio" {
  description = "KURZ__TELEMETRY__SAMPLE_RATIO: the share of requests traced, 0 to 1. Above 0, each task runs an AWS Distro for OpenTelemetry collector beside kurz, which takes kurz's spans over OTLP/HTTP on 127.0.0.1:4318 and sends them to X-Ray. 0: no traces and no collector."
  type        = number
  default     = 0

  validation {
    condition     = var.traces_sample_ratio >= 0 && var.traces_sample_ratio <= 1
    error_message = "traces_sample_ratio must be between 0 and 1 (e.g. 0.01 for 1% of requests)."
  }
}

variable "collector_image" {
  description = "The trace collector's image (AWS Distro for OpenTelemetry), used when traces_sample_ratio is above 0. Pin the version you have vetted."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3"
}

variable "log_level" {
  description = "KURZ__LOG__LEVEL: a tracing filter such as info or kurz=debug,info."
  type        = string
  default     = "info"

  validation {
    condition     = can(regex("^[A-Za-z0-9_:=,.-]+$", var.log_level))
    error_message = "log_level must be a tracing filter such as info or kurz=debug,info."
  }
}

# --- graceful stop and health checks ---------------------------------------------------------
# When a task stops, kurz answers /readyz with 503 for drain_delay_ms while it keeps serving,
# long enough for the load balancer to see it unhealthy (interval x unhealthy threshold), then
# stops accepting and waits up to shutdown_timeout_s for in-flight requests, then flushes clicks.

variable "health_check_interval_s" {
  description = "Load balancer health check interval on /readyz, in seconds."
  type        = number
  default     = 10

  validation {
    condition     = var.health_check_interval_s >= 5 && var.health_check_interval_s <= 60
    error_message = "health_check_interval_s must be between 5 and 60."
  }
}

variable "health_check_unhealthy_threshold" {
  description = "Failed /readyz checks in a row before the load balancer stops routing to a task."
  type        = number
  default     = 2

  validation {
    condition     = var.health_check_unhealthy_threshold >= 2 && var.health_check_unhealthy_threshold <= 10
    error_message = "health_check_unhealthy_threshold must be between 2 and 10."
  }
}

variable "drain_delay_ms" {
  description = "KURZ__SERVER__DRAIN_DELAY_MS: how long kurz keeps serving with /readyz at 503 after SIGTERM. Must exceed interval x unhealthy threshold."
  type        = number
  default     = 25000

  validation {
    condition     = var.drain_delay_ms >= 0 && var.drain_delay_ms <= 60000
    error_message = "drain_delay_ms must be between 0 and 60000."
  }
}

variable "shutdown_timeout_s" {
  description = "KURZ__SERVER__SHUTDOWN_TIMEOUT_S: how long kurz waits for in-flight requests once it stops accepting."
  type        = number
  default     = 20

  validation {
    condition     = var.shutdown_timeout_s >= 1 && var.shutdown_timeout_s <= 60
    error_message = "shutdown_timeout_s must be between 1 and 60."
  }
}

# --- scaling -------------------------------------------------------------------------------

variable "min_tasks" {
  description = "Fewest kurz tasks (at least one per availability zone is the point of having several)."
  type        = number
  default     = 3

  validation {
    condition     = var.min_tasks >= 2 && var.min_tasks <= 1000
    error_message = "min_tasks must be between 2 and 1000: one task is a single point of failure."
  }
}

# The peak needs 15 tasks, up to 22 when the in-process cache hits only ~51% at fleet scale
# (CAPACITY.md section 2). With one availability zone of three lost, the two left must carry it
# all, and a 2x burst on top of that:
#   22 / (2/3) = 33 tasks in the zones left x 2 = 66
variable "max_tasks" {
  description = "Most kurz tasks auto-scaling may run: 66 hold CAPACITY.md's 22 peak tasks with one zone of three lost (22 / (2/3) = 33) and a 2x burst on top."
  type        = number
  default     = 66

  validation {
    condition     = var.max_tasks >= 2 && var.max_tasks <= 1000
    error_message = "max_tasks must be between 2 and 1000."
  }
}

variable "cpu_target_percent" {
  description = "Average CPU the service scales to keep (target tracking)."
  type        = number
  default     = 50

  validation {
    condition     = var.cpu_target_percent >= 10 && var.cpu_target_percent <= 90
    error_message = "cpu_target_percent must be between 10 and 90."
  }
}

variable "burst_scale_out_percent" {
  description = "Step scaling for bursts: when requests per task stay above 1.3 x requests_per_task_per_minute for one minute, add this share of the running tasks at once (twice it above 1.6 x), at least 3 tasks (one per zone). Target tracking still scales in, and out for slow growth."
  type        = number
  default     = 50

  validation {
    condition     = var.burst_scale_out_percent >= 10 && var.burst_scale_out_percent <= 200
    error_message = "burst_scale_out_percent must be between 10 and 200."
  }
}

variable "requests_per_task_per_minute" {
  description = "ALBRequestCountPerTarget the service scales to keep: requests per task per minute. Default from CAPACITY.md (2 vCPU tasks at 50% of the measured rate)."
  type        = number
  default     = 1500000

  validation {
    condition     = var.requests_per_task_per_minute >= 1000
    error_message = "requests_per_task_per_minute must be at least 1000."
  }
}

# --- the click stream and its consumer (kurz aggregate) ---------------------------------------

variable "click_sink" {
  description = "Where the tasks' flushed clicks go (KURZ__CLICKS__SINK): store (each task writes them to DynamoDB, as before) or kinesis (sent to a Kinesis stream made here; kurz aggregate, a service of its own, writes each link once per window). The stream, the consumer service and their alarms exist only with kinesis."
  type        = string
  default     = "store"

  validation {
    condition     = contains(["store", "kinesis"], var.click_sink)
    error_message = "click_sink must be store or kinesis."
  }
}

variable "click_stream_mode" {
  description = "Capacity mode of the click stream: PROVISIONED (click_stream_shards shards; cheapest at a steady, known load) or ON_DEMAND (AWS adds shards as the load grows, billed per GB; a jump past twice the previous peak within 15 minutes is throttled)."
  type        = string
  default     = "PROVISIONED"

  validation {
    condition     = contains(["PROVISIONED", "ON_DEMAND"], var.click_stream_mode)
    error_message = "click_stream_mode must be PROVISIONED or ON_DEMAND."
  }
}

# The default is the design load's (CAPACITY.md), worked out as the rest of that file:
#   clicks at peak: 347,222/s (CAPACITY.md section 1); a task's 1 s flush turns 69-74% of its clicks
#   into separate events (section 5's Zipf model: 69% at 15 tasks at peak, 74% at 15 tasks on
#   average), so at most 0.74 x 347,222 = 257,000 events/s;
#   an event is 87 bytes for a one-click delta with all five dimensions and a 16-character
#   referrer host (96 for two clicks, 28 with analytics off), 126 bytes on average in the stream
#   benchmark's mix of busier links (benches/README.md, "Click stream"): taking 126 ->
#   32.4 MB/s at peak (10.8 MB/s on average: 0.74 x 115,741 events/s);
#   a shard takes 1 MiB/s and 1,000 records/s of writes; records are few (one per shard per task
#   per flush: 15-40 a second a shard), bytes are the limit: 32.4 / 1.05 = 30.9 shards at 100%;
#   at 50% (the tasks' CPU target: a doubled load, or a flush that sends what a failed one left
#   queued, is not throttled): 62, so 64 shards. Reads (2 MiB/s a shard) need half that. The
#   consumers' DynamoDB writes may need more (CAPACITY.md section 5b): measure them.
variable "click_stream_shards" {
  description = "Shards of the click stream in PROVISIONED mode (ignored ON_DEMAND). Default: the 10 billion clicks a day of CAPACITY.md at 50% of the shards' write limit (1 MiB/s each); about $700 a month. Also the most consumer tasks that can have work: each shard is read by one consumer at a time."
  type        = number
  default     = 64

  validation {
    condition     = var.click_stream_shards >= 1 && var.click_stream_shards <= 10000 && floor(var.click_stream_shards) == var.click_stream_shards
    error_message = "click_stream_shards must be a whole number from 1 to 10000."
  }
}

variable "click_stream_retention_hours" {
  description = "How long the stream keeps clicks: consumers down for longer lose the oldest (Kinesis's minimum, 24, is included in the base price; more costs per shard-hour)."
  type        = number
  default     = 24

  validation {
    condition     = var.click_stream_retention_hours >= 24 && var.click_stream_retention_hours <= 8760
    error_message = "click_stream_retention_hours must be between 24 and 8760 (365 days)."
  }
}

variable "aggregate_window_ms" {
  description = "KURZ__AGGREGATE__WINDOW_MS: how long kurz aggregate folds each link's clicks before one write (at least 10000). Longer: fewer writes, statistics later."
  type        = number
  default     = 10000

  validation {
    condition     = var.aggregate_window_ms >= 10000 && var.aggregate_window_ms <= 3600000
    error_message = "aggregate_window_ms must be between 10000 (10 s, kurz's minimum) and 3600000 (1 h)."
  }
}

variable "aggregate_flush_concurrency" {
  description = "KURZ__STORE__DYNAMODB__FLUSH_CONCURRENCY of kurz aggregate: how many links of a shard's window it writes at once. A shard takes about this many links a second per 30 ms a link write takes (infra/CAPACITY.md section 5b: 16 is ~530 a second, short of the design peak's ~2,500 a shard at 64 shards; measure, then raise this or the shards)."
  type        = number
  default     = 16

  validation {
    condition     = var.aggregate_flush_concurrency >= 1 && var.aggregate_flush_concurrency <= 1024
    error_message = "aggregate_flush_concurrency must be between 1 and 1024."
  }
}

variable "aggregate_task_cpu" {
  description = "CPU units of a kurz aggregate task (1024 = 1 vCPU)."
  type        = number
  default     = 1024

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096], var.aggregate_task_cpu)
    error_message = "aggregate_task_cpu must be one of 256, 512, 1024, 2048, 4096."
  }
}

variable "aggregate_task_memory" {
  description = "Memory of a kurz aggregate task in MiB (a Fargate size for aggregate_task_cpu). A consumer holds one window of records per shard it reads: about 5 MB a shard at the design peak."
  type        = number
  default     = 2048

  validation {
    condition     = var.aggregate_task_memory >= 512 && var.aggregate_task_memory <= 30720
    error_message = "aggregate_task_memory must be between 512 and 30720 MiB."
  }
}

variable "aggregate_min_tasks" {
  description = "Fewest kurz aggregate tasks. Two, in different zones: a dead consumer's shards move to the other within aggregate.lease_ms (15 s)."
  type        = number
  default     = 2

  validation {
    condition     = var.aggregate_min_tasks >= 1 && var.aggregate_min_tasks <= 1000
    error_message = "aggregate_min_tasks must be between 1 and 1000."
  }
}

variable "aggregate_max_tasks" {
  description = "Most kurz aggregate tasks auto-scaling may run. In PROVISIONED mode the module caps it at click_stream_shards: a consumer beyond one per shard has nothing to read."
  type        = number
  default     = 64

  validation {
    condition     = var.aggregate_max_tasks >= 1 && var.aggregate_max_tasks <= 1000
    error_message = "aggregate_max_tasks must be between 1 and 1000."
  }
}

variable "aggregate_scale_out_iterator_age_ms" {
  description = "The consumers scale out while the stream's GetRecords.IteratorAgeMilliseconds (how far behind the newest record they read) stays above this, and in while it stays under a sixth of it. A consumer that keeps up reads within a second or two of the write; a window's writes pause its shard's reading."
  type        = number
  default     = 30000

  validation {
    condition     = var.aggregate_scale_out_iterator_age_ms >= 10000
    error_message = "aggregate_scale_out_iterator_age_ms must be at least 10000 (a window)."
  }
}

variable "iterator_age_alarm_ms" {
  description = "Alarm when the consumers stay further behind the stream than this for 5 minutes: statistics are that late, and past click_stream_retention_hours clicks are lost."
  type        = number
  default     = 300000

  validation {
    condition     = var.iterator_age_alarm_ms >= 60000
    error_message = "iterator_age_alarm_ms must be at least 60000 (1 minute)."
  }
}

variable "aggregate_errors_threshold" {
  description = "Alarm when kurz aggregate logs more failures than this a minute (reads, lease rounds, window writes and checkpoints it tries again), for 5 minutes."
  type        = number
  default     = 10

  validation {
    condition     = var.aggregate_errors_threshold >= 0
    error_message = "aggregate_errors_threshold must not be negative."
  }
}

# --- DynamoDB ------------------------------------------------------------------------------

variable "table_name" {
  description = "DynamoDB table (KURZ__STORE__DYNAMODB__TABLE)."
  type        = string
  default     = "kurz"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{3,255}$", var.table_name))
    error_message = "table_name must be 3-255 characters of A-Z, a-z, 0-9, '_', '-' and '.'."
  }
}

variable "table_class" {
  description = "STANDARD, or STANDARD_INFREQUENT_ACCESS when storage dominates the bill (see CAPACITY.md)."
  type        = string
  default     = "STANDARD"

  validation {
    condition     = contains(["STANDARD", "STANDARD_INFREQUENT_ACCESS"], var.table_class)
    error_message = "table_class must be STANDARD or STANDARD_INFREQUENT_ACCESS."
  }
}

variable "table_warm_read_units_per_second" {
  description = "Read units a second the table is pre-warmed for (warm_throughput). null: CAPACITY.md's peak for the click sink, 725,000 with kinesis (170,000 redirects when Redis is down and every L1 miss reads the table, + 555,000 of the click writes' reads), 1,070,000 with store; 0: DynamoDB's own value (12,000 for a new on-demand table). Needs the per-table read quota raised to at least this first (Service Quotas)."
  type        = number
  default     = null

  validation {
    condition     = var.table_warm_read_units_per_second == null || try(var.table_warm_read_units_per_second >= 0 && floor(var.table_warm_read_units_per_second) == var.table_warm_read_units_per_second, false)
    error_message = "table_warm_read_units_per_second must be null or a whole number >= 0."
  }
}

variable "table_warm_write_units_per_second" {
  description = "Write units a second the table is pre-warmed for (warm_throughput). null: CAPACITY.md's peak for the click sink, 1,636,300 with kinesis (46,300 of idempotent creates + 1.59 M of click writes at a 10 s window), 2,616,300 with store; 0: DynamoDB's own value (4,000 for a new on-demand table). Needs the per-table write quota raised to at least this first (Service Quotas)."
  type        = number
  default     = null

  validation {
    condition     = var.table_warm_write_units_per_second == null || try(var.table_warm_write_units_per_second >= 0 && floor(var.table_warm_write_units_per_second) == var.table_warm_write_units_per_second, false)
    error_message = "table_warm_write_units_per_second must be null or a whole number >= 0."
  }
}

variable "table_deletion_protection" {
  description = "DynamoDB deletion protection: the table holds every link ever made."
  type        = bool
  default     = true
}

# --- AWS Backup ------------------------------------------------------------------------------

variable "backup_retention_days" {
  description = "Days each daily backup of the table is kept, in the vault and in every copy."
  type        = number
  default     = 35

  validation {
    condition     = var.backup_retention_days >= 1 && floor(var.backup_retention_days) == var.backup_retention_days
    error_message = "backup_retention_days must be a whole number of days, at least 1."
  }
}

variable "backup_min_retention_days" {
  description = "Vault lock: no recovery point can be deleted sooner than this, by anyone (compliance mode, once backup_lock_changeable_days have passed)."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_min_retention_days >= 1
    error_message = "backup_min_retention_days must be at least 1."
  }
}

variable "backup_max_retention_days" {
  description = "Vault lock: no recovery point can be kept longer than this."
  type        = number
  default     = 365

  validation {
    condition     = var.backup_max_retention_days >= 1 && var.backup_max_retention_days <= 36500
    error_message = "backup_max_retention_days must be between 1 and 36500."
  }
}

variable "backup_lock_changeable_days" {
  description = "Days after the apply during which the vault lock can still be removed; then it is permanent (compliance mode). AWS's minimum is 3."
  type        = number
  default     = 3

  validation {
    condition     = var.backup_lock_changeable_days >= 3
    error_message = "backup_lock_changeable_days must be at least 3 (AWS's minimum for compliance mode)."
  }
}

variable "backup_copy_vault_arns" {
  description = "Backup vaults each daily backup is copied to: one in another region (examples/production makes it) and/or one in another account (whose vault policy must allow backup:CopyIntoBackupVault from this account). Empty: no copy, which leaves the backups in this account and region."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.backup_copy_vault_arns : can(regex("^arn:aws[a-z-]*:backup:[a-z0-9-]+:[0-9]{12}:backup-vault:.+$", a))])
    error_message = "backup_copy_vault_arns must be backup vault ARNs."
  }
}

# --- Redis ---------------------------------------------------------------------------------

variable "redis_node_type" {
  description = "ElastiCache node type. CAPACITY.md sizes the hot set at 100M new links a day: about 11 GB of links clicked at least once an hour at peak (192 bytes each), so 26 GiB nodes (about 110M links after ElastiCache's 25% reserve)."
  type        = string
  default     = "cache.r7g.xlarge"

  validation {
    condition     = can(regex("^cache\\.[a-z0-9]+\\.[a-z0-9]+$", var.redis_node_type))
    error_message = "redis_node_type must be an ElastiCache node type such as cache.r7g.large."
  }
}

variable "redis_replicas" {
  description = "Read replicas beside the primary, in other availability zones (automatic failover needs at least one)."
  type        = number
  default     = 1

  validation {
    condition     = var.redis_replicas >= 1 && var.redis_replicas <= 5
    error_message = "redis_replicas must be between 1 and 5."
  }
}

variable "redis_engine_version" {
  description = "Redis OSS engine version of the replication group."
  type        = string
  default     = "7.1"

  validation {
    condition     = can(regex("^7\\.[0-9]+$", var.redis_engine_version))
    error_message = "redis_engine_version must be a Redis 7 version such as 7.1 (the parameter group family is redis7)."
  }
}

# --- edge ----------------------------------------------------------------------------------

variable "alb_ingress_cidrs" {
  description = "IPv4 ranges allowed to reach the load balancer on 80 and 443."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.alb_ingress_cidrs) >= 1 && alltrue([for c in var.alb_ingress_cidrs : can(cidrhost(c, 0))])
    error_message = "alb_ingress_cidrs must be a non-empty list of IPv4 CIDR blocks."
  }
}

variable "alb_deletion_protection" {
  description = "Deletion protection on the load balancer."
  type        = bool
  default     = true
}

variable "waf_rate_limit" {
  description = "Requests one client IP may make in 5 minutes before the WAF blocks it."
  type        = number
  default     = 6000

  validation {
    condition     = var.waf_rate_limit >= 100 && var.waf_rate_limit <= 2000000000
    error_message = "waf_rate_limit must be between 100 and 2000000000."
  }
}

# --- observability -------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of kurz's, the WAF's and the load balancer's logs, in days (a CloudWatch Logs retention value)."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ...)."
  }
}

variable "alarm_emails" {
  description = "Addresses subscribed to the alarm topic (each confirms by email)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.alarm_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "alarm_emails must be email addresses."
  }
}

variable "availability_slo_percent" {
  description = "Availability SLO: the share of requests (both load balancers) not answered 5xx, over 30 days. Its burn-rate alarms page at 14.4x and 6x the budget, open a ticket at 3x and 1x."
  type        = number
  default     = 99.95

  validation {
    condition     = var.availability_slo_percent >= 90 && var.availability_slo_percent < 100
    error_message = "availability_slo_percent must be at least 90 and below 100."
  }
}

variable "latency_slo_percent" {
  description = "Redirect latency SLO: the share of redirects answered within p99_latency_threshold_s at the task (server-side), over 30 days."
  type        = number
  default     = 99

  validation {
    condition     = var.latency_slo_percent >= 50 && var.latency_slo_percent < 100
    error_message = "latency_slo_percent must be at least 50 and below 100."
  }
}

variable "p99_latency_threshold_s" {
  description = "The redirect latency SLO's bound, in seconds: latency_slo_percent (99) of redirects must take less at the task (TargetResponseTime, server-side)."
  type        = number
  default     = 0.1

  validation {
    condition     = var.p99_latency_threshold_s > 0 && var.p99_latency_threshold_s <= 60
    error_message = "p99_latency_threshold_s must be above 0 and at most 60."
  }
}

variable "error_rate_threshold_percent" {
  description = "Alarm when kurz's own 503s (load shed, store unavailable; counted from its logs) exceed this share of requests. 5xx as a whole are the availability SLO's (availability_slo_percent)."
  type        = number
  default     = 1

  validation {
    condition     = var.error_rate_threshold_percent > 0 && var.error_rate_threshold_percent <= 100
    error_message = "error_rate_threshold_percent must be above 0 and at most 100."
  }
}

variable "transaction_conflicts_threshold" {
  description = "Alarm when more than this many of kurz's DynamoDB transactions a minute conflict, for 5 minutes: many tasks flushing clicks of one hot link at once (CAPACITY.md, viral link)."
  type        = number
  default     = 100

  validation {
    condition     = var.transaction_conflicts_threshold >= 0
    error_message = "transaction_conflicts_threshold must not be negative."
  }
}

variable "redis_evictions_threshold" {
  description = "Alarm when one Redis node evicts more keys than this per minute, for 15 minutes: the hot set no longer fits (allkeys-lru evicts by design; a steady high rate means the node is too small)."
  type        = number
  default     = 100000

  validation {
    condition     = var.redis_evictions_threshold >= 0
    error_message = "redis_evictions_threshold must not be negative."
  }
}

# --- Several regions (README.md, "Several regions"; infra/README.md, "Two regions,
# active-active") ------------------------------------------------------------------------------
# One module call per region, each region with its own root and state, so that applying one
# region never needs the other to answer. The region that creates the table is the primary
# (region_role = "primary"); the others (region_role = "replica") use its replica of the global
# table and its replicas of the data key and the shared secrets. The bootstrap order is in
# infra/README.md.

variable "region_id" {
  description = "This region's number among kurz's regions, 0-7 (KURZ__REGION__ID): every id and generated code minted here carries it. The region's name (KURZ__REGION__NAME) is its AWS region. null: a single-region deployment, exactly as without any region setting."
  type        = number
  default     = null

  validation {
    condition     = var.region_id == null || try(var.region_id >= 0 && var.region_id <= 7 && floor(var.region_id) == var.region_id, false)
    error_message = "region_id must be null or a whole number from 0 to 7."
  }
}

variable "region_role" {
  description = "With region_id set: \"primary\", this module creates the global table, the multi-Region data key and the shared secrets (admin token, API keys, permutation key) and replicates them to the regions in replica_data_key_arns; \"replica\", they were made by the primary's module and this one uses their replicas in its region."
  type        = string
  default     = "primary"

  validation {
    condition     = contains(["primary", "replica"], var.region_role)
    error_message = "region_role must be \"primary\" or \"replica\"."
  }
}

variable "peer_regions" {
  description = "The other regions, by AWS region name: their region_id, the DNS name of the DynamoDB interface endpoint in their VPC (their module's output dynamodb_interface_endpoint, reached over VPC peering: claims homed there, and generated codes minted there, are read and written through it), and their VPC's IPv4 range (allowed to this region's endpoint, and the tasks' way out to theirs)."
  type = map(object({
    id                = number
    dynamodb_endpoint = string
    vpc_cidr          = string
  }))
  default = {}

  validation {
    condition     = alltrue([for name, peer in var.peer_regions : can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", name)) && peer.id >= 0 && peer.id <= 7 && can(cidrhost(peer.vpc_cidr, 0))])
    error_message = "peer_regions: each key must be an AWS region name (us-east-1), each id 0-7, each vpc_cidr an IPv4 CIDR block."
  }
}

variable "replica_data_key_arns" {
  description = "region_role = \"primary\": for each other region (AWS region name), its replica of the data key (that region's module output data_key_arn). Each becomes a replica of the table and of the shared secrets, encrypted with that key. Empty on the primary's first apply (infra/README.md, the bootstrap order)."
  type        = map(string)
  default     = {}
}

variable "primary_data_key_arn" {
  description = "region_role = \"replica\": the primary's data key (its module output data_key_arn, a multi-Region key); this module makes its replica in this region."
  type        = string
  default     = null
}

variable "retiring_data_key_arn" {
  description = "While the data key is being replaced (infra/README.md, \"From one region to two\"): the key the table, secrets and click stream were encrypted with until now. The execution, task, aggregate and backup roles may still use it, for what the switch has not re-encrypted yet; nothing new is encrypted with it. null once the old key is retired."
  type        = string
  default     = null

  validation {
    condition     = var.retiring_data_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.retiring_data_key_arn))
    error_message = "retiring_data_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "primary_secret_arns" {
  description = "region_role = \"replica\": the primary's secrets (its module output secret_arns). The admin token, API keys and permutation key are read from their replicas in this region; the Redis URL is this region's own."
  type        = map(string)
  default     = {}
}

variable "region_failover_store_failures_per_minute" {
  description = "With region_id set: Route 53 sends this region's users to the others while kurz here answers more than this many requests a minute with 503 because the link store did not answer (2 minutes of 3). Not /readyz, which stays up on purpose while the store is down (cached links keep redirecting)."
  type        = number
  default     = 100

  validation {
    condition     = var.region_failover_store_failures_per_minute > 0
    error_message = "region_failover_store_failures_per_minute must be positive."
  }
}
