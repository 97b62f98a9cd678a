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
mock_provider "aws" {
  alias = "peer"
}

variables {
  public_base_url = "https://kurz.example"
  certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
  image_tag       = "0123abc"
}

run "first_plan" {
  command = plan

  assert {
    condition     = output.as_peer == null
    error_message = "A region alone is nobody's peer."
  }
}

# The replica region of two (infra/README.md, step 4 of the bootstrap): the peering, the
# replica data key, and only the Redis URL secret of its own.
run "replica_region_plan" {
  command = plan

  variables {
    region             = "eu-west-1"
    availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    vpc_cidr           = "10.41.0.0/16"
    kurz_region        = { id = 1, role = "replica" }
    peer = {
      region                  = "us-east-1"
      id                      = 0
      vpc_id                  = "vpc-0123456789abcdef0"
      vpc_cidr                = "10.40.0.0/16"
      private_route_table_ids = ["rtb-0123456789abcdef0", "rtb-0123456789abcdef1", "rtb-0123456789abcdef2"]
      dynamodb_endpoint       = "vpce-0123456789abcdef0-abcdefgh.dynamodb.us-east-1.vpce.amazonaws.com"
      data_key_arn            = "arn:aws:kms:us-east-1:123456789012:key/mrk-0123456789abcdef0123456789abcdef"
      secret_arns = {
        admin_token     = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kurz-us-east-1/admin_token-AbCdEf"
        api_keys        = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kurz-us-east-1/api_keys-AbCdEf"
        permutation_key = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kurz-us-east-1/permutation_key-AbCdEf"
        redis_url       = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kurz-us-east-1/redis_url-AbCdEf"
      }
    }
  }

  assert {
    condition     = length(aws_vpc_peering_connection.regions) == 1 && length(aws_route.from_peer) == 3
    error_message = "The replica region's root peers the VPCs and routes both ways."
  }
}

# The primary region once the replica region's key exists (step 3 of the bootstrap): the table
# gets its replica there; the records become latency records; the peering is the replica's.
run "primary_region_plan" {
  command = plan

  variables {
    route53_zone_id = "Z0123456789ABCDEFGHIJ"
    kurz_region     = { id = 0, role = "primary" }
    peer = {
      region                  = "eu-west-1"
      id                      = 1
      vpc_id                  = "vpc-0123456789abcdef1"
      vpc_cidr                = "10.41.0.0/16"
      private_route_table_ids = ["rtb-0123456789abcdef3"]
      dynamodb_endpoint       = "vpce-0123456789abcdef1-abcdefgh.dynamodb.eu-west-1.vpce.amazonaws.com"
      data_key_arn            = "arn:aws:kms:eu-west-1:123456789012:key/mrk-0123456789abcdef0123456789abcdef"
    }
  }

  assert {
    condition     = length(aws_vpc_peering_connection.regions) == 0
    error_message = "The primary region's root leaves the peering to the replica's."
  }

  assert {
    condition     = aws_route53_record.kurz[0].set_identifier == "us-east-1" && aws_route53_record.api[0].set_identifier == "us-east-1"
    error_message = "With two regions the records are latency records, one per region."
  }
}

# A deployment that ran in one region becomes the primary of two (infra/README.md, "From one
# region to two", step 3): its names stay, and its old data key stays usable.
run "single_region_becomes_the_primary" {
  command = plan

  variables {
    name                  = "kurz"
    kurz_region           = { id = 0, role = "primary" }
    retiring_data_key_arn = "arn:aws:kms:us-east-1:123456789012:key/0123abcd-0123-4567-89ab-0123456789ab"
  }

  assert {
    condition     = output.cluster_name == "kurz" && output.service_name == "kurz"
    error_message = "A region that ran alone keeps its names when it becomes the primary."
  }

  assert {
    condition     = output.as_peer.region == "us-east-1" && output.as_peer.id == 0 && output.as_peer.vpc_cidr == "10.40.0.0/16"
    error_message = "as_peer describes this region as the other region's root takes it."
  }
}

# The same, with a range inside the peer's: the plan stops before the peering is made.
run "peered_ranges_must_not_overlap" {
  command = plan

  variables {
    region             = "eu-west-1"
    availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    vpc_cidr           = "10.40.128.0/17"
    kurz_region        = { id = 1, role = "replica" }
    peer = {
      region                  = "us-east-1"
      id                      = 0
      vpc_id                  = "vpc-0123456789abcdef0"
      vpc_cidr                = "10.40.0.0/16"
      private_route_table_ids = ["rtb-0123456789abcdef0", "rtb-0123456789abcdef1", "rtb-0123456789abcdef2"]
      dynamodb_endpoint       = "vpce-0123456789abcdef0-abcdefgh.dynamodb.us-east-1.vpce.amazonaws.com"
      data_key_arn            = "arn:aws:kms:us-east-1:123456789012:key/mrk-0123456789abcdef0123456789abcdef"
      secret_arns = {
        admin_token     = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kurz-us-east-1/admin_token-AbCdEf"
        api_keys        = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kurz-us-east-1/api_keys-AbCdEf"
        permutation_key = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kurz-us-east-1/permutation_key-AbCdEf"
        redis_url       = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kurz-us-east-1/redis_url-AbCdEf"
      }
    }
  }

  expect_failures = [aws_vpc_peering_connection.regions]
}
