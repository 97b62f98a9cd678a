# WAF on the API's load balancer (aws_lb.api; the redirect host has none, alb.tf says why): AWS managed rule groups (common exploits, known bad inputs including
# Log4j, IP reputation) and a per-client-IP rate limit. kurz keeps its own per-IP and per-key
# limits behind it; this one stops floods before they cost a task anything.

resource "aws_wafv2_web_acl" "kurz" {
  name        = "${var.name}-web-acl"
  description = "kurz: managed rule groups and a per-IP rate limit"
  scope       = "REGIONAL"

  default_action {
    allow {}
  }

  rule {
    name     = "rate-limit-per-ip"
    priority = 0

    action {
      block {}
    }

    statement {
      rate_based_statement {
        limit                 = var.waf_rate_limit
        evaluation_window_sec = 300
        aggregate_key_type    = "IP"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-rate-limit-per-ip"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-ip-reputation"
    priority = 10

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesAmazonIpReputationList"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-aws-ip-reputation"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-known-bad-inputs"
    priority = 20

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesKnownBadInputsRuleSet"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-aws-known-bad-inputs"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-common"
    priority = 30

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesCommonRuleSet"

        # A create's body *is* a URL: up to 8 KiB of it (kurz's limits.max_url_bytes) in a body
        # of up to 16 KiB (limits.max_body_bytes), and URLs whose host is an IP address are
        # legitimate destinations. These two rules would block such creates; they count instead,
        # and kurz enforces its own limits (413 / 400).
        rule_action_override {
          name = "SizeRestrictions_BODY"
          action_to_use {
            count {}
          }
        }

        rule_action_override {
          name = "GenericRFI_BODY"
          action_to_use {
            count {}
          }
        }
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-aws-common"
      sampled_requests_enabled   = true
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${var.name}-web-acl"
    sampled_requests_enabled   = true
  }

  tags = local.tags
}

resource "aws_wafv2_web_acl_association" "kurz" {
  resource_arn = aws_lb.api.arn
  web_acl_arn  = aws_wafv2_web_acl.kurz.arn
}

# WAF logs go to a log group whose name must start with aws-waf-logs-.
resource "aws_cloudwatch_log_group" "waf" {
  #checkov:skip=CKV_AWS_338:Retention is the operator's choice (log_retention_days, default 30 days): these are the requests the WAF blocked or counted, for investigating recent attacks; set 365 or more where an audit rule asks for it.
  name              = "aws-waf-logs-${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
  tags              = local.tags
}

resource "aws_wafv2_web_acl_logging_configuration" "kurz" {
  resource_arn            = aws_wafv2_web_acl.kurz.arn
  log_destination_configs = [aws_cloudwatch_log_group.waf.arn]

  # Never log credentials: API keys and the admin token travel in Authorization.
  redacted_fields {
    single_header {
      name = "authorization"
    }
  }

  # Only what a rule blocked or counted: logging every allowed redirect would be terabytes a
  # day at the design load (CAPACITY.md, section 8).
  logging_filter {
    default_behavior = "DROP"

    filter {
      behavior    = "KEEP"
      requirement = "MEETS_ANY"

      condition {
        action_condition {
          action = "BLOCK"
        }
      }

      condition {
        action_condition {
          action = "COUNT"
        }
      }
    }
  }
}
