# Account facts, names and the numbers derived from the inputs. Every other file reads these.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.region

  container_name = "kurz"
  container_port = 8080

  # The DynamoDB calls `kurz serve` makes, and no others (docs/data-model.md lists which request
  # makes which): GetItem (redirect miss, stats, readiness), PutItem (create), UpdateItem (id block
  # lease), DeleteItem and BatchWriteItem (delete a link and its day items), Query (stats, delete),
  # TransactWriteItems (click flush, idempotent create), DescribeTable (start-up check).
  # Not here: CreateTable / UpdateTimeToLive / DescribeTimeToLive (`kurz init`; Terraform owns
  # the table), Scan (never used), ConditionCheckItem (no transaction has a bare condition check).
  kurz_dynamodb_actions = [
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteItem",
    "dynamodb:DescribeStream",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:TransactWriteItems",
    "dynamodb:UpdateItem",
  ]

  # The X-Ray calls of the collector beside kurz when traces are on (its awsxray exporter).
  collector_xray_actions = ["xray:PutTelemetryRecords", "xray:PutTraceSegments"]

  # The click stream (click_sink = "kinesis"): the stream, its consumer service (kurz aggregate)
  # and their alarms exist only then. Known at plan time, so it can decide counts.
  click_stream = var.click_sink == "kinesis"

  # The Kinesis calls `kurz serve` makes as the stream's producer (src/clicks/stream.rs):
  # ListShards (the shard map, every minute) and PutRecords. Not here: CreateStream and
  # DescribeStreamSummary (`kurz init`; Terraform owns the stream).
  kurz_kinesis_actions = [
    "kinesis:ListShards",
    "kinesis:PutRecords",
  ]

  # The calls `kurz aggregate` makes (src/aggregate): ListShards, GetShardIterator, GetRecords on
  # the stream; on the table, its leases and checkpoints (Query, PutItem, UpdateItem) and the
  # click writes of the store (GetItem, UpdateItem, TransactWriteItems, BatchWriteItem for the
  # sketches of a link deleted meanwhile) plus DescribeTable (its start-up check). No index is
  # read.
  aggregate_kinesis_actions = [
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
  ]
  aggregate_dynamodb_actions = [
    "dynamodb:BatchWriteItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:TransactWriteItems",
    "dynamodb:UpdateItem",
  ]

  # A consumer beyond one per shard holds no lease; ON_DEMAND, the shard count is AWS's.
  aggregate_max_tasks = var.click_stream_mode == "PROVISIONED" ? min(var.aggregate_max_tasks, var.click_stream_shards) : var.aggregate_max_tasks

  # The table's warm throughput (units a second) at the design peak, CAPACITY.md's figures:
  #   reads: a Redis failover sends every L1 miss to the table: 0.49 x 347,222 redirects/s =
  #   170,000 GetItem of 1 RRU (section 3); plus the click writes' reads at the peak: 555,000
  #   RRU/s with the stream at a 10 s window (section 5b), 900,000 with the store sink (5a);
  #   writes: creates at the peak, 11,574/s x 4 WRU (with Idempotency-Key) = 46,300; plus the
  #   click writes: 1.59 M WRU/s with the stream (5b), 2.57 M with the store sink (5a).
  # A variable set to a number wins; 0 leaves that side at DynamoDB's own value.
  table_warm_read  = coalesce(var.table_warm_read_units_per_second, 170000 + (local.click_stream ? 555000 : 900000))
  table_warm_write = coalesce(var.table_warm_write_units_per_second, 46300 + (local.click_stream ? 1590000 : 2570000))

  # Graceful stop, in seconds. The load balancer needs interval x unhealthy-threshold to see a
  # draining task's /readyz 503; kurz keeps serving for drain_delay_ms (longer than that), then
  # waits up to shutdown_timeout_s for in-flight requests, then flushes clicks (one store call,
  # bounded by store_timeout_ms) and exits.
  health_window_s        = var.health_check_interval_s * var.health_check_unhealthy_threshold
  drain_delay_s          = ceil(var.drain_delay_ms / 1000)
  deregistration_delay_s = local.drain_delay_s + var.shutdown_timeout_s
  stop_timeout_s         = local.deregistration_delay_s + ceil(var.store_timeout_ms / 1000) + 5

  # The memory sizes (MiB) AWS Fargate accepts for each CPU size (units), from the ECS task
  # definition documentation ("Task CPU and memory"); tests/it/infra.rs holds this table to it.
  # Both task definitions' preconditions check against it, so a pair AWS rejects fails the plan
  # instead of the apply.
  fargate_memory_by_cpu = {
    "256"   = [512, 1024, 2048]
    "512"   = range(1024, 4096 + 1, 1024)
    "1024"  = range(2048, 8192 + 1, 1024)
    "2048"  = range(4096, 16384 + 1, 1024)
    "4096"  = range(8192, 30720 + 1, 1024)
    "8192"  = range(16384, 61440 + 1, 4096)
    "16384" = range(32768, 122880 + 1, 8192)
  }

  # One HTTP worker per vCPU of the task.
  workers = max(1, floor(var.task_cpu / 1024))

  # Members of the Redis replication group: ElastiCache names them <group>-001, -002, ...
  redis_group_id   = "${var.name}-cache"
  redis_member_ids = [for i in range(var.redis_replicas + 1) : format("%s-%03d", local.redis_group_id, i + 1)]

  tags = merge({ "app" = "kurz", "kurz:module" = var.name }, var.tags)

  # Several regions (variables.tf, "Several regions"). Known at plan time: they decide counts.
  regions        = var.region_id != null
  region_replica = local.regions && var.region_role == "replica"

  # The data key here: the multi-Region key this module made, or this region's replica of the
  # primary's.
  data_key_arn = local.region_replica ? aws_kms_replica_key.data[0].arn : aws_kms_key.data[0].arn
  # The roles' grants on the data key: also on the one being retired, while there is one.
  data_key_arns = concat([local.data_key_arn], var.retiring_data_key_arn == null ? [] : [var.retiring_data_key_arn])
  # The table here: this module's, or this region's replica of the primary's global table (a
  # replica has the table's name and this region in its ARN).
  table_name = local.region_replica ? var.table_name : aws_dynamodb_table.kurz[0].name
  table_arn  = local.region_replica ? "arn:${local.partition}:dynamodb:${local.region}:${local.account_id}:table/${var.table_name}" : aws_dynamodb_table.kurz[0].arn

  # The other regions' replicas of the table and of the data key (same names, same key id).
  peer_table_arns    = { for region in keys(var.peer_regions) : region => "arn:${local.partition}:dynamodb:${region}:${local.account_id}:table/${var.table_name}" }
  peer_data_key_arns = { for region in keys(var.peer_regions) : region => join(":", [for i, part in split(":", local.data_key_arn) : i == 3 ? region : part]) }

  # What kurz is told about the regions, by `kurz serve` and `kurz aggregate` alike
  # (README.md, "Several regions"). The streams API has no private DNS name: kurz is given its
  # endpoint's.
  region_environment = concat(
    local.regions ? [
      { name = "KURZ__REGION__NAME", value = local.region },
      { name = "KURZ__REGION__ID", value = tostring(var.region_id) },
    ] : [],
    local.regions && length(var.peer_regions) > 0 ? [
      { name = "KURZ__REGION__PEERS", value = join(",", [for name, peer in var.peer_regions : "${name}=${peer.id}@https://${peer.dynamodb_endpoint}"]) },
    ] : [],
  )
  stream_environment = local.regions ? [
    { name = "KURZ__REGION__STREAM_ENDPOINT_URL", value = "https://${aws_vpc_endpoint.dynamodb_streams[0].dns_entry[0].dns_name}" },
  ] : []
}
