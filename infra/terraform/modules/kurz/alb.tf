# Two internet-facing Application Load Balancers in front of the same kurz tasks, one per host
# name (CAPACITY.md section 8):
#   - redirects: public_base_url's host (the short links), aws_lb.kurz. No WAF: a web ACL bills
#     every request it sees ($0.60 a million, ~$182,000 a month at 10 billion redirects a day),
#     and its per-IP rate rule would block carrier NAT and link-preview fetchers. kurz limits
#     unknown-code misses per client IP itself; Shield Standard covers network floods. The API,
#     the home page and the admin pages are not served here (rules below).
#   - the API: api_host (default api.HOST), aws_lb.api, behind the web ACL (waf.tf) with its
#     per-IP rate limit and managed rules: creates, the link API, the home page, admin pages.
# Both: HTTPS (TLS 1.2+) to the tasks, HTTP only to redirect to HTTPS, access logs to S3. A
# target group serves one load balancer, so each has its own; the service registers its tasks
# in both (ecs.tf).

locals {
  redirect_host   = regex("^https://([^/:]+)", var.public_base_url)[0]
  api_host        = coalesce(var.api_host, "api.${local.redirect_host}")
  api_certificate = coalesce(var.api_certificate_arn, var.certificate_arn)
  # The load balancers, for alarms that add both up (monitoring.tf).
  load_balancers = {
    redirect = aws_lb.kurz.arn_suffix
    api      = aws_lb.api.arn_suffix
  }
}

resource "aws_lb" "kurz" {
  #checkov:skip=CKV2_AWS_28:The redirect host is deliberately outside the WAF: a web ACL bills every request it sees (~$182,000 a month at the design load, CAPACITY.md section 8) for 302s answered from memory, and its per-IP rate rule blocks carrier NAT. kurz rate-limits unknown-code misses per IP itself; the API host (aws_lb.api) is behind the web ACL, and this one serves no API path (listener rules below).
  #checkov:skip=CKV2_AWS_76:No web ACL on the redirect host (see CKV2_AWS_28 above); the API host's web ACL has AWSManagedRulesKnownBadInputsRuleSet with its Log4JRCE rules. The check also demands AWSManagedRulesAnonymousIpList, which would block link-preview fetchers on hosting providers and every VPN or Tor user.
  name                       = "${var.name}-alb"
  internal                   = false
  load_balancer_type         = "application"
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection
  enable_http2               = true
  idle_timeout               = 60
  # kurz reads the client address from X-Forwarded-For; the load balancer appends the real one.
  xff_header_processing_mode = "append"

  access_logs {
    bucket  = aws_s3_bucket.alb_logs.id
    prefix  = "alb"
    enabled = true
  }

  tags = local.tags

  depends_on = [aws_s3_bucket_policy.alb_logs]
}

resource "aws_lb_target_group" "kurz" {
  #checkov:skip=CKV_AWS_378:kurz serves plain HTTP on 8080; the hop is inside the VPC, from the load balancer's security group to the tasks' only (network.tf). TLS to the task would need a certificate in every task for no gain in isolation.
  name                 = "${var.name}-tg"
  port                 = local.container_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = local.deregistration_delay_s

  health_check {
    enabled             = true
    path                = "/readyz"
    protocol            = "HTTP"
    port                = "traffic-port"
    matcher             = "200"
    interval            = var.health_check_interval_s
    timeout             = min(5, var.health_check_interval_s - 1) # must be shorter than the interval
    healthy_threshold   = 2
    unhealthy_threshold = var.health_check_unhealthy_threshold
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.drain_delay_ms > local.health_window_s * 1000
      error_message = "drain_delay_ms must exceed health_check_interval_s x health_check_unhealthy_threshold (in ms), or the load balancer still routes to a task that has stopped serving."
    }
  }
}

resource "aws_lb_target_group" "api" {
  #checkov:skip=CKV_AWS_378:kurz serves plain HTTP on 8080; the hop is inside the VPC, from the load balancer's security group to the tasks' only (network.tf). TLS to the task would need a certificate in every task for no gain in isolation.
  name                 = "${var.name}-api-tg"
  port                 = local.container_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = local.deregistration_delay_s

  health_check {
    enabled             = true
    path                = "/readyz"
    protocol            = "HTTP"
    port                = "traffic-port"
    matcher             = "200"
    interval            = var.health_check_interval_s
    timeout             = min(5, var.health_check_interval_s - 1) # must be shorter than the interval
    healthy_threshold   = 2
    unhealthy_threshold = var.health_check_unhealthy_threshold
  }

  tags = local.tags

}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.kurz.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-Res-2021-06"
  certificate_arn   = var.certificate_arn

  routing_http_response_strict_transport_security_header_value = "max-age=31536000"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.kurz.arn
  }

  tags = local.tags
}

# The redirect host serves short links (and /healthz, /readyz, static files), nothing else:
# the API answers 421 here, so no create or admin call ever reaches kurz without the WAF; the
# home page and the admin pages move to the API host.
resource "aws_lb_listener_rule" "redirect_host_no_api" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 10

  condition {
    path_pattern {
      values = ["/api/*", "/api"]
    }
  }

  action {
    type = "fixed-response"
    fixed_response {
      content_type = "application/json" # the load balancer offers no application/problem+json
      status_code  = "421"
      message_body = jsonencode({ type = "about:blank", title = "Misdirected Request", status = 421, detail = "The API is served at https://${local.api_host}/api/" })
    }
  }

  tags = local.tags
}

resource "aws_lb_listener_rule" "redirect_host_pages" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 20

  condition {
    path_pattern {
      values = ["/", "/admin", "/admin/*"]
    }
  }

  action {
    type = "redirect"
    redirect {
      host        = local.api_host
      path        = "/#{path}"
      query       = "#{query}"
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }
  }

  tags = local.tags
}

resource "aws_lb" "api" {
  #checkov:skip=CKV2_AWS_76:Log4j is covered: AWSManagedRulesKnownBadInputsRuleSet (with its Log4JRCE rules) is on the attached web ACL (waf.tf). The check also demands AWSManagedRulesAnonymousIpList, which would block API clients on hosting providers and every VPN or Tor user.
  name                       = "${var.name}-api-alb"
  internal                   = false
  load_balancer_type         = "application"
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection
  enable_http2               = true
  idle_timeout               = 60
  xff_header_processing_mode = "append"

  access_logs {
    bucket  = aws_s3_bucket.alb_logs.id
    prefix  = "alb-api"
    enabled = true
  }

  tags = local.tags

  depends_on = [aws_s3_bucket_policy.alb_logs]
}

resource "aws_lb_listener" "api_https" {
  load_balancer_arn = aws_lb.api.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-Res-2021-06"
  certificate_arn   = local.api_certificate

  routing_http_response_strict_transport_security_header_value = "max-age=31536000"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }

  tags = local.tags
}

resource "aws_lb_listener" "api_http" {
  load_balancer_arn = aws_lb.api.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"

    redirect {
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }
  }

  tags = local.tags
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.kurz.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"

    redirect {
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }
  }

  tags = local.tags
}

# --- access logs ---

# Load balancers write access logs as the region's ELB account (regions opened before August
# 2022) or as the log-delivery service principal (newer regions): the policy below allows both.
data "aws_elb_service_account" "current" {}

resource "aws_s3_bucket" "alb_logs" {
  #checkov:skip=CKV_AWS_18:This bucket is itself the access-log destination; logging it to another bucket would only log the log writes.
  #checkov:skip=CKV_AWS_144:Access logs are operational data kept log_retention_days; a copy in a second region is not worth its cost here.
  #checkov:skip=CKV2_AWS_62:Nothing consumes events from the access-log bucket; notifications would have no receiver.
  #checkov:skip=CKV_AWS_145:Load balancer access logs can only be delivered to SSE-S3 (AES256) buckets, not SSE-KMS; AES256 is set below.
  bucket        = "${var.name}-alb-logs-${local.account_id}-${local.region}"
  force_destroy = false
  tags          = local.tags
}

resource "aws_s3_bucket_ownership_controls" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "alb_logs" {
  bucket                  = aws_s3_bucket.alb_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {
      prefix = "alb" # alb/ and alb-api/: both load balancers
    }
    expiration {
      days = var.log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    # Every object: an empty prefix, not an empty filter block (which recent providers warn
    # about as "Invalid Attribute Combination").
    filter {
      prefix = ""
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "alb_logs" {
  statement {
    sid       = "LoadBalancerWritesAccessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.alb_logs.arn}/alb/AWSLogs/${local.account_id}/*", "${aws_s3_bucket.alb_logs.arn}/alb-api/AWSLogs/${local.account_id}/*"]
    principals {
      type        = "AWS"
      identifiers = [data.aws_elb_service_account.current.arn]
    }
  }
  statement {
    sid       = "LogDeliveryWritesAccessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.alb_logs.arn}/alb/AWSLogs/${local.account_id}/*", "${aws_s3_bucket.alb_logs.arn}/alb-api/AWSLogs/${local.account_id}/*"]
    principals {
      type        = "Service"
      identifiers = ["logdelivery.elasticloadbalancing.amazonaws.com"]
    }
  }
  statement {
    sid       = "DenyPlainHttp"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.alb_logs.arn, "${aws_s3_bucket.alb_logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id
  policy = data.aws_iam_policy_document.alb_logs.json
}
