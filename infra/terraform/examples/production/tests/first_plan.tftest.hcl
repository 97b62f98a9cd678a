# `terraform test` (from examples/production, after `terraform init -backend=false`): with
# mocked providers, nothing reaches AWS.
# A first plan from an empty account: every resource is new, so their attributes are unknown.
mock_provider "aws" {
  mock_data "aws_availability_zones" {
    defaults = { names = ["us-east-1a", "us-east-1b", "us-east-1c"] }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_data "aws_region" {
    defaults = { region = "us-east-1" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
}
mock_provider "aws" {
  alias = "backup_copy"
}

variables {
  public_base_url = "https://kurz.example"
  certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
  image_tag       = "0123abc"
}

run "first_plan" {
  command = plan
}
