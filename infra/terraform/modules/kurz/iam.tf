# The execution role is what ECS uses to start a task (pull the image, write the log stream, read
# the four secrets); the task role is what `kurz serve` runs as (DynamoDB, and with the click
# stream its puts); the aggregate role is what `kurz aggregate` runs as (click_sink = "kinesis":
# the stream's reads and the table calls of its leases and click writes). Each allows the calls
# its program makes and no others; tests/it/infra.rs holds them to the source.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    sid     = "EcsTasksAssumeInThisAccount"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

# --- execution role ---

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  description        = "ECS starts kurz tasks with it: image pull, log stream, kurz's secrets"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid = "EcrLogin"
    # GetAuthorizationToken has no resource to scope it to.
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "PullTheKurzImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [var.ecr_repository_arn]
  }
  statement {
    sid       = "WriteKurzLogStreams"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for g in concat([aws_cloudwatch_log_group.kurz], aws_cloudwatch_log_group.aggregate) : "${g.arn}:log-stream:*"]
  }
  statement {
    sid       = "ReadKurzSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = values(local.secret_arns)
  }
  statement {
    sid       = "DecryptKurzSecrets"
    actions   = ["kms:Decrypt"]
    resources = local.data_key_arns
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "start-kurz"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --- task role ---

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  description        = "kurz serve runs as it: its DynamoDB calls on kurz's table, its puts on the click stream"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "task" {
  statement {
    sid     = "KurzTable"
    actions = local.kurz_dynamodb_actions
    # The stream: in a deployment of several regions, one instance a region reads it for the
    # region's caches.
    # With several regions, the other regions' replicas too: a claim homed there, or a code
    # minted there that this region's replica does not hold yet, is written or read there.
    resources = concat(
      [
        local.table_arn,
        "${local.table_arn}/index/*",
        "${local.table_arn}/stream/*",
      ],
      [for region in keys(var.peer_regions) : local.peer_table_arns[region]],
    )
  }
  statement {
    # The table is encrypted with the data key: reading and writing items needs the key,
    # and only through DynamoDB. A multi-Region key's replicas share its id: the peers' are
    # this key's ARN in their region.
    sid       = "KurzTableKeyThroughDynamoDB"
    actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = concat(local.data_key_arns, [for region in keys(var.peer_regions) : local.peer_data_key_arns[region]])
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = concat(["dynamodb.${local.region}.amazonaws.com"], [for region in keys(var.peer_regions) : "dynamodb.${region}.amazonaws.com"])
    }
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "kurz-dynamodb"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# With traces on, the collector beside kurz (not kurz) sends the spans to X-Ray: the only calls
# of the task role that kurz does not make. X-Ray has no resources to scope them to.
data "aws_iam_policy_document" "task_traces" {
  count = local.traces ? 1 : 0

  statement {
    #checkov:skip=CKV_AWS_356:X-Ray's PutTraceSegments and PutTelemetryRecords take no resource ARN; "*" is the only resource they accept.
    sid       = "CollectorSendsTracesToXRay"
    actions   = local.collector_xray_actions
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "task_traces" {
  count  = local.traces ? 1 : 0
  name   = "kurz-traces"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task_traces[0].json
}

# With the click stream, `kurz serve` also puts records. A policy of its own, so that switching
# click_sink never replaces the DynamoDB one (the tasks would be without it for a moment).
data "aws_iam_policy_document" "task_click_stream" {
  count = local.click_stream ? 1 : 0

  statement {
    sid       = "PutClicksOnTheStream"
    actions   = local.kurz_kinesis_actions
    resources = [aws_kinesis_stream.clicks[0].arn]
  }
  statement {
    # The stream is encrypted with the data key: a put needs a data key from it, through
    # Kinesis only.
    sid       = "ClickStreamKeyThroughKinesis"
    actions   = ["kms:GenerateDataKey"]
    resources = local.data_key_arns
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["kinesis.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "task_click_stream" {
  count  = local.click_stream ? 1 : 0
  name   = "kurz-click-stream"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task_click_stream[0].json
}

# --- aggregate role (kurz aggregate) ---

resource "aws_iam_role" "aggregate" {
  count              = local.click_stream ? 1 : 0
  name               = "${var.name}-aggregate"
  description        = "kurz aggregate runs as it: reads the click stream, writes clicks and its leases to kurz's table"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "aggregate" {
  count = local.click_stream ? 1 : 0

  statement {
    sid       = "ReadTheClickStream"
    actions   = local.aggregate_kinesis_actions
    resources = [aws_kinesis_stream.clicks[0].arn]
  }
  statement {
    # Leases and checkpoints, and the clicks, on the table itself: the consumer reads no index.
    sid       = "KurzTable"
    actions   = local.aggregate_dynamodb_actions
    resources = [local.table_arn]
  }
  statement {
    # Records are decrypted with the data key, through Kinesis only.
    sid       = "ClickStreamKeyThroughKinesis"
    actions   = ["kms:Decrypt"]
    resources = local.data_key_arns
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["kinesis.${local.region}.amazonaws.com"]
    }
  }
  statement {
    # As the task role: the table's items are encrypted with the data key.
    sid       = "KurzTableKeyThroughDynamoDB"
    actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = local.data_key_arns
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["dynamodb.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "aggregate" {
  count  = local.click_stream ? 1 : 0
  name   = "kurz-aggregate"
  role   = aws_iam_role.aggregate[0].id
  policy = data.aws_iam_policy_document.aggregate[0].json
}
