# Alarms, all to one SNS topic: the availability and redirect latency SLOs (burn rates), DynamoDB
# throttling and errors, Redis evictions and CPU, kurz's own 503s (load shedding and a store
# that does not answer) and dropped clicks, counted from kurz's JSON logs, and with the click
# stream: consumers behind or not running, throttled puts, consumer failures.

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.logs.arn
  tags              = local.tags
}

resource "aws_sns_topic_subscription" "alarm_email" {
  for_each  = toset(var.alarm_emails)
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

locals {
  alarm_actions = [aws_sns_topic.alarms.arn]
  # The operations kurz makes on the table (DynamoDB reports throttles and system errors per
  # operation, so the alarms below add them up).
  dynamodb_operations = ["BatchWriteItem", "DeleteItem", "GetItem", "PutItem", "Query", "TransactWriteItems", "UpdateItem"]
  # "FILL(m0, 0) + FILL(m1, 0) + ...": a missing datapoint means no throttles, not no data.
  dynamodb_sum = join(" + ", [for i, op in local.dynamodb_operations : "FILL(m${i}, 0)"])
}

# --- SLOs: availability and redirect latency, as multi-window multi-burn-rate alarms ---
# The method of Google's SRE workbook ("Alerting on SLOs"): a burn rate is how fast the error
# budget goes (1x: exactly the budget over the SLO's 30 days). Page when 2% of a month's budget
# is gone in an hour (14.4x over 1 h) or 5% in 6 hours (6x over 6 h); open a ticket at 10% in a
# day (3x over 1 d) or 10% in 3 days (1x over 3 d). Each long window is paired with a short one
# (1/12 of it) that must breach too, so an alarm resets minutes after the burn stops. One
# metric alarm per window (one datapoint of the window's length: CloudWatch takes periods of an
# hour and more up to 7 days), one composite alarm per severity for the AND of the windows;
# only the composites notify.
#
#   availability: 5xx answered by kurz (HTTPCode_Target_5XX_Count) or by the load balancers
#   themselves (HTTPCode_ELB_5XX_Count: no healthy task, timeouts), over all requests, on both
#   load balancers. RequestCount leaves out requests refused before a target was chosen (an ELB
#   503 with no healthy target), so the load balancers' 5xx are added to the denominator too:
#   a total outage is a ratio of 1, not a division by zero; the 502s and 504s that had a target
#   are counted twice in it, which lowers the ratio by at most that share.
#   latency: the share of redirects slower than p99_latency_threshold_s (100 ms) at the redirect
#   load balancer, from TargetResponseTime's percentile rank PR(:0.1): 99% under 100 ms is a 1%
#   budget. This is the server side only (from the load balancer sending the request to the
#   task's last byte): DNS, TCP and TLS set-up and the client's network are not in it. What
#   users see needs a measurement outside the VPC (a CloudWatch Synthetics canary, or CloudFront
#   in front, which reports its own latency): not part of this module.

locals {
  availability_budget = 1 - var.availability_slo_percent / 100 # 0.0005 at 99.95%
  latency_budget      = 1 - var.latency_slo_percent / 100      # 0.01 at 99%

  # burn rate x window; the key names the alarm.
  slo_windows = {
    "14.4x-1h" = { burn = 14.4, seconds = 3600 }
    "14.4x-5m" = { burn = 14.4, seconds = 300 }
    "6x-6h"    = { burn = 6, seconds = 21600 }
    "6x-30m"   = { burn = 6, seconds = 1800 }
    "3x-1d"    = { burn = 3, seconds = 86400 }
    "3x-2h"    = { burn = 3, seconds = 7200 }
    "1x-3d"    = { burn = 1, seconds = 259200 }
    "1x-6h"    = { burn = 1, seconds = 21600 }
  }
  # severity -> pairs of (long window, short window), any pair firing fires the severity.
  slo_rules = {
    page   = [["14.4x-1h", "14.4x-5m"], ["6x-6h", "6x-30m"]]
    ticket = [["3x-1d", "3x-2h"], ["1x-3d", "1x-6h"]]
  }

  # The availability alarms' queries of each load balancer's counts, by query id.
  lb_count_metrics = { t5 = "HTTPCode_Target_5XX_Count", e5 = "HTTPCode_ELB_5XX_Count", req = "RequestCount" }
  lb_count_queries = {
    for pair in setproduct(keys(local.lb_count_metrics), keys(local.load_balancers)) :
    "${pair[0]}_${pair[1]}" => { metric = local.lb_count_metrics[pair[0]], load_balancer = local.load_balancers[pair[1]] }
  }
  lb_errors   = join(" + ", flatten([for k, _ in local.load_balancers : ["FILL(t5_${k}, 0)", "FILL(e5_${k}, 0)"]]))
  lb_requests = join(" + ", flatten([for k, _ in local.load_balancers : ["FILL(req_${k}, 0)", "FILL(e5_${k}, 0)"]]))
}

resource "aws_cloudwatch_metric_alarm" "availability_burn" {
  for_each            = local.slo_windows
  alarm_name          = "${var.name}-slo-availability-${each.key}"
  alarm_description   = "Availability SLO ${var.availability_slo_percent}%: 5xx (kurz's and the load balancers') above ${each.value.burn}x the error budget over ${each.value.seconds} s. A window of the ${var.name}-slo-availability-page/-ticket composite alarms, which notify; the 14.4x-5m one also rolls back a deployment in progress."
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.burn * local.availability_budget
  evaluation_periods  = 1
  datapoints_to_alarm = 1
  treat_missing_data  = "notBreaching"

  metric_query {
    id          = "ratio"
    expression  = "IF(total > 0, bad / total, 0)"
    label       = "5xx share of requests over ${each.value.seconds} s"
    return_data = true
  }

  metric_query {
    id         = "bad"
    expression = local.lb_errors
  }

  metric_query {
    id         = "total"
    expression = local.lb_requests
  }

  # The counts of every load balancer: t5_, e5_ and req_ followed by its key.
  dynamic "metric_query" {
    for_each = local.lb_count_queries
    content {
      id = metric_query.key
      metric {
        namespace   = "AWS/ApplicationELB"
        metric_name = metric_query.value.metric
        dimensions  = { LoadBalancer = metric_query.value.load_balancer }
        period      = each.value.seconds
        stat        = "Sum"
      }
    }
  }

  tags = local.tags
}

resource "aws_cloudwatch_metric_alarm" "latency_burn" {
  for_each            = local.slo_windows
  alarm_name          = "${var.name}-slo-redirect-latency-${each.key}"
  alarm_description   = "Redirect latency SLO: ${var.latency_slo_percent}% of redirects under ${var.p99_latency_threshold_s} s at the task (TargetResponseTime on the redirect load balancer: server-side, without the client's network and TLS set-up); slow ones above ${each.value.burn}x the budget over ${each.value.seconds} s. A window of the ${var.name}-slo-redirect-latency-page/-ticket composite alarms, which notify."
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.burn * local.latency_budget
  evaluation_periods  = 1
  datapoints_to_alarm = 1
  treat_missing_data  = "notBreaching"

  metric_query {
    id          = "slow"
    expression  = "1 - FILL(fast, 100) / 100"
    label       = "share of redirects slower than ${var.p99_latency_threshold_s} s over ${each.value.seconds} s"
    return_data = true
  }

  metric_query {
    id = "fast"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "TargetResponseTime"
      dimensions  = { LoadBalancer = aws_lb.kurz.arn_suffix }
      period      = each.value.seconds
      stat        = "PR(:${var.p99_latency_threshold_s})"
    }
  }

  tags = local.tags
}

resource "aws_cloudwatch_composite_alarm" "availability" {
  for_each          = local.slo_rules
  alarm_name        = "${var.name}-slo-availability-${each.key}"
  alarm_description = "${each.key == "page" ? "Page" : "Ticket"}: the ${var.availability_slo_percent}% availability SLO's error budget burns at ${join(" or ", [for pair in each.value : local.slo_windows[pair[0]].burn])}x (long and short window both)."
  alarm_rule        = join(" OR ", [for pair in each.value : "(ALARM(\"${aws_cloudwatch_metric_alarm.availability_burn[pair[0]].alarm_name}\") AND ALARM(\"${aws_cloudwatch_metric_alarm.availability_burn[pair[1]].alarm_name}\"))"])
  alarm_actions     = local.alarm_actions
  ok_actions        = local.alarm_actions
  tags              = local.tags
}

resource "aws_cloudwatch_composite_alarm" "latency" {
  for_each          = local.slo_rules
  alarm_name        = "${var.name}-slo-redirect-latency-${each.key}"
  alarm_description = "${each.key == "page" ? "Page" : "Ticket"}: the redirect latency SLO (${var.latency_slo_percent}% under ${var.p99_latency_threshold_s} s, server-side) burns its budget at ${join(" or ", [for pair in each.value : local.slo_windows[pair[0]].burn])}x (long and short window both)."
  alarm_rule        = join(" OR ", [for pair in each.value : "(ALARM(\"${aws_cloudwatch_metric_alarm.latency_burn[pair[0]].alarm_name}\") AND ALARM(\"${aws_cloudwatch_metric_alarm.latency_burn[pair[1]].alarm_name}\"))"])
  alarm_actions     = local.alarm_actions
  ok_actions        = local.alarm_actions
  tags              = local.tags
}

resource "aws_cloudwatch_metric_alarm" "no_healthy_task" {
  alarm_name          = "${var.name}-no-healthy-task"
  alarm_description   = "No kurz task passes the load balancer's /readyz check."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HealthyHostCount"
  dimensions          = { LoadBalancer = aws_lb.kurz.arn_suffix, TargetGroup = aws_lb_target_group.kurz.arn_suffix }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# --- kurz's own 503s, from its JSON logs ---
# kurz logs every 5xx answer as one JSON line with a numeric "status" field (src/http/observe.rs);
# 503 is what it answers when it sheds load or the store does not answer in time. The ALB's
# target 5xx alarm above covers all 5xx; this one isolates the 503s. A task that drains also
# answers the load balancer's /readyz probes with 503 for drain_delay_ms: a few lines per
# stopped task, far under the threshold.

resource "aws_cloudwatch_log_metric_filter" "kurz_503" {
  name           = "${var.name}-503"
  log_group_name = aws_cloudwatch_log_group.kurz.name
  pattern        = "{ $.status = 503 }"

  metric_transformation {
    name          = "Responses503"
    namespace     = "kurz/${var.name}"
    value         = "1"
    default_value = "0"
    unit          = "Count"
  }
}

resource "aws_cloudwatch_metric_alarm" "kurz_503_rate" {
  alarm_name          = "${var.name}-503-rate"
  alarm_description   = "More than ${var.error_rate_threshold_percent}% of requests answered 503 by kurz (load shed or store unavailable), counted from its logs."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.error_rate_threshold_percent
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "pct"
    expression  = "100 * FILL(shed, 0) / IF(requests > 0, requests, 1)"
    label       = "kurz 503, % of requests"
    return_data = true
  }

  metric_query {
    id         = "requests"
    expression = join(" + ", [for k, _ in local.load_balancers : "FILL(req_${k}, 0)"])
  }

  metric_query {
    id = "shed"
    metric {
      namespace   = "kurz/${var.name}"
      metric_name = aws_cloudwatch_log_metric_filter.kurz_503.metric_transformation[0].name
      period      = 60
      stat        = "Sum"
    }
  }

  dynamic "metric_query" {
    for_each = local.load_balancers
    content {
      id = "req_${metric_query.key}"
      metric {
        namespace   = "AWS/ApplicationELB"
        metric_name = "RequestCount"
        dimensions  = { LoadBalancer = metric_query.value }
        period      = 60
        stat        = "Sum"
      }
    }
  }

  tags = local.tags
}

# --- DynamoDB ---

resource "aws_cloudwatch_metric_alarm" "dynamodb_throttles" {
  alarm_name          = "${var.name}-dynamodb-throttled-requests"
  alarm_description   = "DynamoDB throttled kurz's requests in 2 of 3 minutes (on demand: a hot partition, e.g. click flushes of one viral link, or a jump past twice the previous peak)."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "throttled"
    expression  = local.dynamodb_sum
    label       = "ThrottledRequests, all kurz operations"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = local.dynamodb_operations
    content {
      id = "m${metric_query.key}"
      metric {
        namespace   = "AWS/DynamoDB"
        metric_name = "ThrottledRequests"
        dimensions  = { TableName = local.table_name, Operation = metric_query.value }
        period      = 60
        stat        = "Sum"
      }
    }
  }

  tags = local.tags
}

resource "aws_cloudwatch_metric_alarm" "dynamodb_system_errors" {
  alarm_name          = "${var.name}-dynamodb-system-errors"
  alarm_description   = "DynamoDB answered kurz's requests with HTTP 500 in 2 of 3 minutes."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "errors"
    expression  = local.dynamodb_sum
    label       = "SystemErrors, all kurz operations"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = local.dynamodb_operations
    content {
      id = "m${metric_query.key}"
      metric {
        namespace   = "AWS/DynamoDB"
        metric_name = "SystemErrors"
        dimensions  = { TableName = local.table_name, Operation = metric_query.value }
        period      = 60
        stat        = "Sum"
      }
    }
  }

  tags = local.tags
}

# Two transactions on one item at the same moment: one is cancelled and retried. kurz's click
# flush is a transaction on the link item and its day item, so a link clicked on every task
# conflicts with itself once the fleet is large (CAPACITY.md, "A viral link").
resource "aws_cloudwatch_metric_alarm" "dynamodb_transaction_conflicts" {
  alarm_name          = "${var.name}-dynamodb-transaction-conflicts"
  alarm_description   = "More than ${var.transaction_conflicts_threshold} DynamoDB transaction conflicts a minute for 5 minutes on kurz's table: hot links' click flushes collide (see CAPACITY.md)."
  namespace           = "AWS/DynamoDB"
  metric_name         = "TransactionConflict"
  dimensions          = { TableName = local.table_name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.transaction_conflicts_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# --- Redis, per node ---

resource "aws_cloudwatch_metric_alarm" "redis_evictions" {
  for_each            = toset(local.redis_member_ids)
  alarm_name          = "${each.key}-evictions"
  alarm_description   = "Redis node ${each.key} evicts more than ${var.redis_evictions_threshold} keys a minute for 15 minutes: the hot set no longer fits (see CAPACITY.md)."
  namespace           = "AWS/ElastiCache"
  metric_name         = "Evictions"
  dimensions          = { CacheClusterId = each.key }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 15
  datapoints_to_alarm = 15
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.redis_evictions_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "redis_engine_cpu" {
  for_each            = toset(local.redis_member_ids)
  alarm_name          = "${each.key}-engine-cpu"
  alarm_description   = "Redis node ${each.key}: the Redis thread above 80% CPU for 5 minutes (Redis runs commands on one core)."
  namespace           = "AWS/ElastiCache"
  metric_name         = "EngineCPUUtilization"
  dimensions          = { CacheClusterId = each.key }
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = 80
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "redis_host_cpu" {
  for_each            = toset(local.redis_member_ids)
  alarm_name          = "${each.key}-host-cpu"
  alarm_description   = "Redis node ${each.key}: host CPU above 90% for 5 minutes (TLS and networking run beside the Redis thread)."
  namespace           = "AWS/ElastiCache"
  metric_name         = "CPUUtilization"
  dimensions          = { CacheClusterId = each.key }
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = 90
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# --- clicks dropped, from the tasks' logs ---
# kurz logs one JSON line at ERROR with the number of clicks in a `clicks` field whenever it gives
# clicks up (src/clicks): the store sink's backlog past clicks.max_pending_codes or unwritten at
# shutdown, the stream sink's queue full, records the stream did not take within the resend
# window, or unsent at shutdown. The metric is the number of clicks. tests/it/infra.rs holds this
# list to those lines.

locals {
  dropped_clicks_messages = [
    "dropped clicks: *",
    "dropped unflushed clicks: the store has failed for too long",
    "clicks not written at shutdown",
    "clicks not sent to the click stream at shutdown",
  ]
}

resource "aws_cloudwatch_log_metric_filter" "clicks_dropped" {
  name           = "${var.name}-clicks-dropped"
  log_group_name = aws_cloudwatch_log_group.kurz.name
  pattern        = "{ ${join(" || ", [for m in local.dropped_clicks_messages : "$.message = \"${m}\""])} }"

  metric_transformation {
    name          = "ClicksDropped"
    namespace     = "kurz/${var.name}"
    value         = "$.clicks"
    default_value = "0"
    unit          = "Count"
  }
}

resource "aws_cloudwatch_metric_alarm" "clicks_dropped" {
  alarm_name          = "${var.name}-clicks-dropped"
  alarm_description   = "kurz dropped clicks (counted from its logs): the store or the click stream did not take them for too long, or a task stopped with clicks unwritten."
  namespace           = "kurz/${var.name}"
  metric_name         = aws_cloudwatch_log_metric_filter.clicks_dropped.metric_transformation[0].name
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  datapoints_to_alarm = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# --- the click stream and kurz aggregate (click_sink = "kinesis") ---

locals {
  click_stream_dimension = { StreamName = one(aws_kinesis_stream.clicks[*].name) }
  # Every failure kurz aggregate logs and tries again after (the WARN lines of src/aggregate,
  # exact text; tests/it/infra.rs holds this list to the source).
  aggregate_error_messages = [
    "cannot begin a window; reading it again",
    "cannot give the lease up; it expires",
    "cannot mark the shard ended; trying again",
    "cannot move the checkpoint; trying again",
    "cannot read the shard; trying again",
    "lease round failed; trying again",
    "skipping a record that is not kurz's click events",
    "the store did not take the whole window; sending the rest again",
  ]
}

resource "aws_cloudwatch_metric_alarm" "click_stream_iterator_age" {
  count               = local.click_stream ? 1 : 0
  alarm_name          = "${var.name}-click-stream-behind"
  alarm_description   = "kurz aggregate reads more than ${var.iterator_age_alarm_ms} ms behind the click stream for 5 minutes: statistics are late, and clicks older than ${var.click_stream_retention_hours} h are lost. No reads at all count as behind."
  namespace           = "AWS/Kinesis"
  metric_name         = "GetRecords.IteratorAgeMilliseconds"
  dimensions          = local.click_stream_dimension
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.iterator_age_alarm_ms
  # A live consumer calls GetRecords on each of its shards every second, records or not: a
  # minute without a datapoint is a minute nobody read the stream.
  treat_missing_data = "breaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = local.tags
}

resource "aws_cloudwatch_metric_alarm" "click_stream_throttled_puts" {
  count               = local.click_stream ? 1 : 0
  alarm_name          = "${var.name}-click-stream-throttled-puts"
  alarm_description   = "The click stream refused kurz's records for throughput in 3 of 5 minutes: the tasks keep them queued and send them again, for clicks.kinesis.resend_window_ms (then they are dropped). Add shards (click_stream_shards) or use ON_DEMAND."
  namespace           = "AWS/Kinesis"
  metric_name         = "PutRecords.ThrottledRecords"
  dimensions          = local.click_stream_dimension
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_log_metric_filter" "aggregate_errors" {
  count          = local.click_stream ? 1 : 0
  name           = "${var.name}-aggregate-errors"
  log_group_name = aws_cloudwatch_log_group.aggregate[0].name
  pattern        = "{ ${join(" || ", [for m in local.aggregate_error_messages : "$.message = \"${m}\""])} }"

  metric_transformation {
    name          = "AggregateErrors"
    namespace     = "kurz/${var.name}"
    value         = "1"
    default_value = "0"
    unit          = "Count"
  }
}

resource "aws_cloudwatch_metric_alarm" "aggregate_errors" {
  count               = local.click_stream ? 1 : 0
  alarm_name          = "${var.name}-aggregate-errors"
  alarm_description   = "kurz aggregate logged more than ${var.aggregate_errors_threshold} failures a minute (stream reads, lease rounds, window writes, checkpoints) for 5 minutes; each is tried again, so clicks are late, not lost. Its log group says which."
  namespace           = "kurz/${var.name}"
  metric_name         = aws_cloudwatch_log_metric_filter.aggregate_errors[0].metric_transformation[0].name
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.aggregate_errors_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# Container Insights is on for the cluster (ecs.tf), so the service's running task count is a
# metric; a minute without it is a service with no task reporting.
resource "aws_cloudwatch_metric_alarm" "aggregate_not_running" {
  count               = local.click_stream ? 1 : 0
  alarm_name          = "${var.name}-aggregate-not-running"
  alarm_description   = "No kurz aggregate task has run for 2 of 3 minutes: nobody writes the clicks on the stream (they wait there for ${var.click_stream_retention_hours} h)."
  namespace           = "ECS/ContainerInsights"
  metric_name         = "RunningTaskCount"
  dimensions          = { ClusterName = aws_ecs_cluster.kurz.name, ServiceName = aws_ecs_service.aggregate[0].name }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# --- several regions: the signal Route 53 fails a region over on ---
# Not /readyz: it stays up while the store is down, on purpose (cached links keep redirecting,
# and a fleet that took itself out of the load balancer would lose those too). Not the ALB's
# 5xx: load shedding and a peer region's outage answer 503 as well, and moving users to the
# other region helps with neither. This counts kurz's 503s that blame this region's link store
# (the "unavailable" field of its log line: "store" for a store that failed, did not answer in
# time or has every call its admission limit allows in flight; "region" for a peer region;
# src/http/errors.rs, ApiError::unavailable).
#
# A single metric, not metric math: Route 53 health checks on CloudWatch alarms do not take
# metric math. So the threshold is a count a minute (region_failover_store_failures_per_minute)
# rather than a share of requests. Missing data (no 503 logged) is healthy; a region whose
# tasks are all gone is taken out by the alias records' evaluate_target_health instead.

resource "aws_cloudwatch_log_metric_filter" "store_unavailable" {
  count          = local.regions ? 1 : 0
  name           = "${var.name}-store-unavailable"
  log_group_name = aws_cloudwatch_log_group.kurz.name
  pattern        = "{ $.status = 503 && $.unavailable = \"store\" }"

  metric_transformation {
    name          = "StoreUnavailable"
    namespace     = "kurz/${var.name}"
    value         = "1"
    default_value = "0"
    unit          = "Count"
  }
}

resource "aws_cloudwatch_metric_alarm" "store_unavailable" {
  count               = local.regions ? 1 : 0
  alarm_name          = "${var.name}-store-unavailable"
  alarm_description   = "kurz in ${local.region} answered more than ${var.region_failover_store_failures_per_minute} requests a minute with 503 because its link store did not answer, in 2 of 3 minutes: Route 53 sends this region's users to the other regions until it clears."
  namespace           = "kurz/${var.name}"
  metric_name         = aws_cloudwatch_log_metric_filter.store_unavailable[0].metric_transformation[0].name
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.region_failover_store_failures_per_minute
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_route53_health_check" "store" {
  count                           = local.regions ? 1 : 0
  type                            = "CLOUDWATCH_METRIC"
  cloudwatch_alarm_name           = aws_cloudwatch_metric_alarm.store_unavailable[0].alarm_name
  cloudwatch_alarm_region         = local.region
  insufficient_data_health_status = "LastKnownStatus"
  tags                            = merge(local.tags, { Name = "${var.name}-store" })
}
