# The click stream (click_sink = "kinesis"): the tasks send their flushed clicks to a Kinesis
# stream, and `kurz aggregate`, a service of its own with the same image, folds each link's
# clicks over a window and writes them to the table once per window. Shards are shared among
# the consumers by leases in the table (src/aggregate/leases.rs), so any number of consumer tasks
# may run; one per shard is the most that can have work. Nothing here exists with "store".
#
# Terraform owns the stream as it owns the table: `kurz init` (CreateStream) is not needed, and
# no role here may call it.

resource "aws_kinesis_stream" "clicks" {
  count = local.click_stream ? 1 : 0

  name             = "${var.name}-clicks"
  shard_count      = var.click_stream_mode == "PROVISIONED" ? var.click_stream_shards : null
  retention_period = var.click_stream_retention_hours
  encryption_type  = "KMS"
  kms_key_id       = local.data_key_arn
  # kurz reads with GetRecords and registers no enhanced fan-out consumer. One that someone else
  # registered is using the stream: deleting it should fail, not deregister them.
  enforce_consumer_deletion = false

  stream_mode_details {
    stream_mode = var.click_stream_mode
  }

  tags = local.tags
}

# --- the consumer: kurz aggregate ---

resource "aws_cloudwatch_log_group" "aggregate" {
  #checkov:skip=CKV_AWS_338:Retention is the operator's choice (log_retention_days, default 30 days), as for the tasks' log group: these are operational lines (leases taken and lost, failed reads and writes); the clicks themselves are in DynamoDB.
  count             = local.click_stream ? 1 : 0
  name              = "/ecs/${var.name}-aggregate"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
  tags              = local.tags
}

resource "aws_ecs_task_definition" "aggregate" {
  count                    = local.click_stream ? 1 : 0
  family                   = "${var.name}-aggregate"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.aggregate_task_cpu
  memory                   = var.aggregate_task_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.aggregate[0].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # The same image as the service, another subcommand. Every environment entry is a real kurz
  # setting; the click stream's are the service's, so both ends agree on the stream and on the
  # producers' resend window (which sets how long a consumer remembers record ids).
  container_definitions = jsonencode([
    {
      name                   = "${local.container_name}-aggregate"
      image                  = var.image
      command                = ["aggregate"]
      essential              = true
      readonlyRootFilesystem = true
      # A stop gives the shards' leases back at once (one call each) after the window writes
      # in flight, each bounded by the store timeout; killed sooner, nothing is lost (the next
      # holder applies the begun window again, and its writes find their tokens applied).
      stopTimeout = 30
      environment = concat([
        # /metrics and /healthz, on loopback: nothing outside the task connects to it.
        { name = "KURZ__SERVER__BIND", value = "127.0.0.1:8080" },
        { name = "KURZ__STORE__BACKEND", value = "dynamodb" },
        { name = "KURZ__STORE__TIMEOUT_MS", value = tostring(var.store_timeout_ms) },
        { name = "KURZ__STORE__DYNAMODB__TABLE", value = local.table_name },
        { name = "KURZ__STORE__DYNAMODB__REGION", value = local.region },
        { name = "KURZ__CLICKS__KINESIS__STREAM", value = aws_kinesis_stream.clicks[0].name },
        { name = "KURZ__AGGREGATE__WINDOW_MS", value = tostring(var.aggregate_window_ms) },
        { name = "KURZ__STORE__DYNAMODB__FLUSH_CONCURRENCY", value = tostring(var.aggregate_flush_concurrency) },
        { name = "KURZ__LOG__FORMAT", value = "json" },
        { name = "KURZ__LOG__LEVEL", value = var.log_level },
        ],
        # Several regions: each region's consumer writes its own click rollups.
        local.region_environment,
      )
      # `kurz aggregate` serves /healthz on server.bind once its store is open; `kurz
      # healthcheck` asks it (the image has no shell or curl).
      healthCheck = {
        command     = ["CMD", "/usr/local/bin/kurz", "healthcheck"]
        interval    = 10
        timeout     = 5
        retries     = 3
        startPeriod = 15
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          "awslogs-group"         = aws_cloudwatch_log_group.aggregate[0].name
          "awslogs-region"        = local.region
          "awslogs-stream-prefix" = "aggregate"
          "mode"                  = "non-blocking"
          "max-buffer-size"       = "25m"
        }
      }
    },
  ])

  tags = local.tags

  lifecycle {
    precondition {
      condition     = contains(lookup(local.fargate_memory_by_cpu, tostring(var.aggregate_task_cpu), []), var.aggregate_task_memory)
      error_message = "aggregate_task_memory is not a Fargate size for aggregate_task_cpu: 256 takes 512, 1024 or 2048; 512 takes 1024-4096, 1024 takes 2048-8192, 2048 takes 4096-16384, 4096 takes 8192-30720 (steps of 1024)."
    }
  }
}

resource "aws_ecs_service" "aggregate" {
  count            = local.click_stream ? 1 : 0
  name             = "${var.name}-aggregate"
  cluster          = aws_ecs_cluster.kurz.id
  task_definition  = aws_ecs_task_definition.aggregate[0].arn
  desired_count    = var.aggregate_min_tasks
  launch_type      = "FARGATE"
  platform_version = "LATEST"

  # New consumers start beside the old ones and take their share of the shards; the old ones
  # give theirs up as they stop.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  availability_zone_rebalancing      = "ENABLED"
  enable_execute_command             = false
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"

  # No load balancer: a deployment whose tasks do not start or fail their container health
  # check rolls back by itself.
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.aggregate[0].id]
    assign_public_ip = false
  }

  tags = local.tags

  lifecycle {
    # Auto-scaling owns the task count after the first apply.
    ignore_changes = [desired_count]
  }

  depends_on = [aws_iam_role_policy.execution, aws_iam_role_policy.aggregate, aws_vpc_endpoint.kinesis]
}

# --- auto-scaling on how far behind the consumers read ---
# GetRecords.IteratorAgeMilliseconds is not a load per task that falls as tasks are added (which
# target tracking assumes): it grows while the consumers fall behind and stays near zero once they
# keep up. So step scaling: out while it is high, faster the further behind; in, one task at a
# time, while it stays low for 15 minutes.

resource "aws_appautoscaling_target" "aggregate" {
  count              = local.click_stream ? 1 : 0
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.kurz.name}/${aws_ecs_service.aggregate[0].name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.aggregate_min_tasks
  max_capacity       = local.aggregate_max_tasks

  lifecycle {
    precondition {
      condition     = var.aggregate_max_tasks >= var.aggregate_min_tasks
      error_message = "aggregate_max_tasks must be at least aggregate_min_tasks."
    }
    precondition {
      condition     = var.click_stream_mode != "PROVISIONED" || var.aggregate_min_tasks <= var.click_stream_shards
      error_message = "aggregate_min_tasks must be at most click_stream_shards: a consumer beyond one per shard has nothing to read."
    }
  }
}

resource "aws_appautoscaling_policy" "aggregate_out" {
  count              = local.click_stream ? 1 : 0
  name               = "${var.name}-aggregate-behind"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.aggregate[0].service_namespace
  resource_id        = aws_appautoscaling_target.aggregate[0].resource_id
  scalable_dimension = aws_appautoscaling_target.aggregate[0].scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    metric_aggregation_type = "Maximum"
    cooldown                = 120

    # Bounds are relative to the alarm's threshold (aggregate_scale_out_iterator_age_ms).
    step_adjustment {
      metric_interval_lower_bound = 0
      metric_interval_upper_bound = var.aggregate_scale_out_iterator_age_ms
      scaling_adjustment          = 1
    }
    step_adjustment {
      metric_interval_lower_bound = var.aggregate_scale_out_iterator_age_ms
      metric_interval_upper_bound = 4 * var.aggregate_scale_out_iterator_age_ms
      scaling_adjustment          = 2
    }
    step_adjustment {
      metric_interval_lower_bound = 4 * var.aggregate_scale_out_iterator_age_ms
      scaling_adjustment          = 4
    }
  }
}

resource "aws_appautoscaling_policy" "aggregate_in" {
  count              = local.click_stream ? 1 : 0
  name               = "${var.name}-aggregate-caught-up"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.aggregate[0].service_namespace
  resource_id        = aws_appautoscaling_target.aggregate[0].resource_id
  scalable_dimension = aws_appautoscaling_target.aggregate[0].scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    metric_aggregation_type = "Maximum"
    cooldown                = 300

    step_adjustment {
      metric_interval_upper_bound = 0
      scaling_adjustment          = -1
    }
  }
}

# These two only drive the scaling (no notification): the alarms for people are in monitoring.tf.
resource "aws_cloudwatch_metric_alarm" "aggregate_behind" {
  count               = local.click_stream ? 1 : 0
  alarm_name          = "${var.name}-aggregate-scale-out"
  alarm_description   = "Scales kurz aggregate out: the consumers read more than ${var.aggregate_scale_out_iterator_age_ms} ms behind the stream for 2 minutes."
  namespace           = "AWS/Kinesis"
  metric_name         = "GetRecords.IteratorAgeMilliseconds"
  dimensions          = { StreamName = aws_kinesis_stream.clicks[0].name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.aggregate_scale_out_iterator_age_ms
  # No datapoint: nobody reads (the no-consumer alarm says so); more tasks of a service that
  # cannot start would not help.
  treat_missing_data = "notBreaching"
  alarm_actions      = [aws_appautoscaling_policy.aggregate_out[0].arn]
  tags               = local.tags
}

resource "aws_cloudwatch_metric_alarm" "aggregate_caught_up" {
  count               = local.click_stream ? 1 : 0
  alarm_name          = "${var.name}-aggregate-scale-in"
  alarm_description   = "Scales kurz aggregate in: the consumers read within ${floor(var.aggregate_scale_out_iterator_age_ms / 6)} ms of the stream's newest record for 15 minutes."
  namespace           = "AWS/Kinesis"
  metric_name         = "GetRecords.IteratorAgeMilliseconds"
  dimensions          = { StreamName = aws_kinesis_stream.clicks[0].name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 15
  datapoints_to_alarm = 15
  comparison_operator = "LessThanThreshold"
  threshold           = floor(var.aggregate_scale_out_iterator_age_ms / 6)
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.aggregate_in[0].arn]
  tags                = local.tags
}
