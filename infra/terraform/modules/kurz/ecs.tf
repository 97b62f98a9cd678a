# kurz on ECS Fargate: the cluster, the task definition (settings as environment variables,
# secrets from Secrets Manager) and the service behind the load balancer.

resource "aws_cloudwatch_log_group" "kurz" {
  #checkov:skip=CKV_AWS_338:Retention is the operator's choice (log_retention_days, default 30 days): kurz's logs are operational (failures, audit lines of creates; clicks and links live in DynamoDB). Set 365 or more where an audit rule asks for it.
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
  tags              = local.tags
}

resource "aws_ecs_cluster" "kurz" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = local.tags
}

resource "aws_ecs_cluster_capacity_providers" "kurz" {
  cluster_name       = aws_ecs_cluster.kurz.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

locals {
  # traces_sample_ratio above 0: kurz sends its spans to a collector in the same task, which
  # sends them to X-Ray. Known at plan time.
  traces = var.traces_sample_ratio > 0
  # Both containers' logs go to the log group, by stream prefix. A slow log pipe must never
  # block request threads: non-blocking, with a buffer.
  task_log_options = {
    "awslogs-group"  = aws_cloudwatch_log_group.kurz.name
    "awslogs-region" = local.region
    "mode"           = "non-blocking"
  }
  # Where the collector takes spans: loopback only, as the task's containers share it.
  collector_otlp = "127.0.0.1:4318"
  collector_config = yamlencode({
    receivers  = { otlp = { protocols = { http = { endpoint = local.collector_otlp } } } }
    processors = { batch = { timeout = "1s" } }
    exporters = {
      awsxray = {
        region = local.region
        # Searchable in X-Ray as annotations (kurz_request_id, http_route).
        indexed_attributes = ["kurz.request_id", "http.route"]
      }
    }
    service = {
      pipelines = { traces = { receivers = ["otlp"], processors = ["batch"], exporters = ["awsxray"] } }
    }
  })
}

resource "aws_ecs_task_definition" "kurz" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # Every environment entry of kurz's container is a real kurz setting (README.md, "Settings");
  # values are strings.
  container_definitions = jsonencode(concat([
    {
      name                   = local.container_name
      image                  = var.image
      essential              = true
      readonlyRootFilesystem = true
      stopTimeout            = local.stop_timeout_s
      portMappings = [
        { containerPort = local.container_port, protocol = "tcp", name = "http" },
      ]
      environment = concat(
        [
          { name = "KURZ__SERVER__BIND", value = "0.0.0.0:8080" }, # local.container_port
          { name = "KURZ__SERVER__PUBLIC_BASE_URL", value = var.public_base_url },
          # The API's host is kurz too: long URLs pointing at it are refused (loops).
          { name = "KURZ__SERVER__OWN_HOSTS", value = local.api_host },
          # /metrics on a listener of its own, on loopback: the public listener (the one the
          # load balancers reach) answers 404 there. Not in portMappings and not the target
          # groups' port; a collector sidecar in the same task scrapes 127.0.0.1:9090.
          { name = "KURZ__SERVER__ADMIN_BIND", value = "127.0.0.1:9090" },
          { name = "KURZ__SERVER__WORKERS", value = tostring(local.workers) },
          { name = "KURZ__SERVER__DRAIN_DELAY_MS", value = tostring(var.drain_delay_ms) },
          { name = "KURZ__SERVER__SHUTDOWN_TIMEOUT_S", value = tostring(var.shutdown_timeout_s) },
          # The ALB connects from its subnets: believe its X-Forwarded-For (client IPs for the
          # rate limits and the audit log) and nobody else's.
          { name = "KURZ__SERVER__TRUSTED_PROXIES", value = join(",", data.aws_subnet.public[*].cidr_block) },
          { name = "KURZ__STORE__BACKEND", value = "dynamodb" },
          { name = "KURZ__STORE__TIMEOUT_MS", value = tostring(var.store_timeout_ms) },
          { name = "KURZ__STORE__DYNAMODB__TABLE", value = local.table_name },
          { name = "KURZ__STORE__DYNAMODB__REGION", value = local.region },
          { name = "KURZ__CACHE__LOCAL__MAX_BYTES", value = tostring(var.local_cache_bytes) },
          { name = "KURZ__CACHE__LOCAL__TTL_MS", value = tostring(var.local_cache_ttl_ms) },
          { name = "KURZ__CLICKS__FLUSH_INTERVAL_MS", value = tostring(var.clicks_flush_interval_ms) },
          { name = "KURZ__LOG__FORMAT", value = "json" },
          { name = "KURZ__LOG__LEVEL", value = var.log_level },
        ],
        # click_sink = "kinesis": flushed clicks go to the stream and kurz aggregate writes them
        # (stream.tf), which reads the same stream settings.
        local.click_stream ? [
          { name = "KURZ__CLICKS__SINK", value = "kinesis" },
          { name = "KURZ__CLICKS__KINESIS__STREAM", value = aws_kinesis_stream.clicks[0].name },
        ] : [],
        # The ALB's subnets are trusted proxies (above): its X-Amzn-Trace-Id names the trace.
        local.traces ? [
          { name = "KURZ__TELEMETRY__OTLP_ENDPOINT", value = "http://127.0.0.1:4318" }, # local.collector_otlp
          { name = "KURZ__TELEMETRY__SAMPLE_RATIO", value = tostring(var.traces_sample_ratio) },
        ] : [],
        # Several regions: this one's name and number, the others and how they are reached,
        # and where this region's table stream is read (one task a region reads it).
        local.region_environment,
        local.stream_environment,
      )
      # kurz sends no span before the collector listens (a few would be dropped and counted).
      dependsOn = local.traces ? [{ containerName = "collector", condition = "START" }] : null
      secrets = [
        { name = "KURZ__AUTH__ADMIN_TOKEN", valueFrom = local.secret_arns["admin_token"] },
        { name = "KURZ__AUTH__API_KEYS", valueFrom = local.secret_arns["api_keys"] },
        { name = "KURZ__IDS__PERMUTATION_KEY", valueFrom = local.secret_arns["permutation_key"] },
        { name = "KURZ__CACHE__REDIS__URL", valueFrom = local.secret_arns["redis_url"] },
      ]
      # Liveness: `kurz healthcheck` asks /healthz on the bind address (the image has no shell
      # or curl). It stays 200 while kurz drains, so ECS never kills a draining task.
      healthCheck = {
        command     = ["CMD", "/usr/local/bin/kurz", "healthcheck"]
        interval    = 10
        timeout     = 5
        retries     = 3
        startPeriod = 15
      }
      logConfiguration = {
        logDriver = "awslogs"
        options   = merge(local.task_log_options, { "awslogs-stream-prefix" = "kurz", "max-buffer-size" = "25m" })
      }
      ulimits = [
        { name = "nofile", softLimit = 65536, hardLimit = 65536 },
      ]
    },
    ], local.traces ? [
    {
      name  = "collector"
      image = var.collector_image
      # kurz serves without it: spans it cannot send are dropped and counted
      # (kurz_trace_spans_dropped_total), no request waits.
      essential              = false
      readonlyRootFilesystem = true
      environment = [
        { name = "AOT_CONFIG_CONTENT", value = local.collector_config },
      ]
      logConfiguration = {
        logDriver = "awslogs"
        options   = merge(local.task_log_options, { "awslogs-stream-prefix" = "collector", "max-buffer-size" = "4m" })
      }
    },
  ] : []))

  tags = local.tags

  lifecycle {
    precondition {
      condition     = contains(lookup(local.fargate_memory_by_cpu, tostring(var.task_cpu), []), var.task_memory)
      error_message = "task_memory is not a Fargate size for task_cpu: 1024 takes 2048-8192, 2048 takes 4096-16384, 4096 takes 8192-30720 (steps of 1024), 8192 takes 16384-61440 (steps of 4096), 16384 takes 32768-122880 (steps of 8192)."
    }
    precondition {
      condition     = var.local_cache_bytes <= var.task_memory * 1048576 / 2
      error_message = "local_cache_bytes must be at most half of task_memory: the cache budget is an estimate, and kurz needs room for connections and buffers."
    }
    precondition {
      condition     = local.stop_timeout_s <= 120
      error_message = "drain_delay_ms + shutdown_timeout_s + store_timeout_ms (+5 s) must fit Fargate's 120 s stop timeout."
    }
  }
}

resource "aws_ecs_service" "kurz" {
  name             = var.name
  cluster          = aws_ecs_cluster.kurz.id
  task_definition  = aws_ecs_task_definition.kurz.arn
  desired_count    = var.min_tasks
  launch_type      = "FARGATE"
  platform_version = "LATEST"

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 30
  availability_zone_rebalancing      = "ENABLED"
  enable_execute_command             = false
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"

  # A deployment whose tasks do not become healthy, or during which 5xx burn the availability
  # budget at 14.4x over 5 minutes (0.72% of requests at 99.95%), rolls back to the previous task
  # definition by itself.
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  alarms {
    enable      = true
    rollback    = true
    alarm_names = [aws_cloudwatch_metric_alarm.availability_burn["14.4x-5m"].alarm_name]
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.kurz.arn
    container_name   = local.container_name
    container_port   = local.container_port
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.api.arn
    container_name   = local.container_name
    container_port   = local.container_port
  }

  tags = local.tags

  lifecycle {
    # Auto-scaling owns the task count after the first apply.
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.https, aws_lb_listener.api_https, aws_iam_role_policy.execution, aws_iam_role_policy.task, aws_iam_role_policy.task_click_stream, aws_vpc_endpoint.kinesis]
}

# --- auto-scaling: on CPU and on requests per task, whichever asks for more, and a step for bursts ---

resource "aws_appautoscaling_target" "kurz" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.kurz.name}/${aws_ecs_service.kurz.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_tasks
  max_capacity       = var.max_tasks

  lifecycle {
    precondition {
      condition     = var.max_tasks >= var.min_tasks
      error_message = "max_tasks must be at least min_tasks."
    }
  }
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.kurz.service_namespace
  resource_id        = aws_appautoscaling_target.kurz.resource_id
  scalable_dimension = aws_appautoscaling_target.kurz.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "requests" {
  name               = "${var.name}-requests-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.kurz.service_namespace
  resource_id        = aws_appautoscaling_target.kurz.resource_id
  scalable_dimension = aws_appautoscaling_target.kurz.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.requests_per_task_per_minute
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.kurz.arn_suffix}/${aws_lb_target_group.kurz.arn_suffix}"
    }
  }
}

# Bursts: target tracking acts on 3 one-minute datapoints in a row and then adds what the last
# minute needed, so a jump is met 3-5 minutes late and in steps. This step policy acts on one
# minute of requests per task (the load balancer's metric, published every minute) above 1.3x
# the target, and adds a share of the fleet at once. Step, not scheduled: kurz's bursts are
# viral links and launches, not a time of day (add aws_appautoscaling_scheduled_action for a
# known daily curve). Scale-in stays with target tracking (slow, 5-minute cooldown).
resource "aws_appautoscaling_policy" "burst" {
  name               = "${var.name}-burst"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.kurz.service_namespace
  resource_id        = aws_appautoscaling_target.kurz.resource_id
  scalable_dimension = aws_appautoscaling_target.kurz.scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type          = "PercentChangeInCapacity"
    min_adjustment_magnitude = 3 # one task per zone at least
    cooldown                 = 60
    metric_aggregation_type  = "Average"

    # Bounds are relative to the alarm's threshold (1.3x the target).
    step_adjustment {
      metric_interval_lower_bound = 0
      metric_interval_upper_bound = 0.3 * var.requests_per_task_per_minute
      scaling_adjustment          = var.burst_scale_out_percent
    }

    step_adjustment {
      metric_interval_lower_bound = 0.3 * var.requests_per_task_per_minute
      scaling_adjustment          = 2 * var.burst_scale_out_percent
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "burst" {
  alarm_name          = "${var.name}-burst-scale-out"
  alarm_description   = "Requests per kurz task above 1.3x the scaling target for one minute: the step scaling policy adds tasks at once. Notifies nobody."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "RequestCountPerTarget"
  dimensions          = { TargetGroup = aws_lb_target_group.kurz.arn_suffix }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  datapoints_to_alarm = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 1.3 * var.requests_per_task_per_minute
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.burst.arn]
  tags                = local.tags
}
