terraform {
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # State holds the generated secrets: keep it in an encrypted, access-controlled bucket.
  # terraform init -backend-config=backend.hcl (see backend.hcl.example).
  backend "s3" {}
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      app         = "kurz"
      environment = "production"
      managed-by  = "terraform"
    }
  }
}

# With two regions (variables.tf): the other region, where the replica region's root accepts
# the VPC peering and adds the routes back. Without one, the same region as above (unused).
provider "aws" {
  alias  = "peer"
  region = try(var.peer.region, var.region)

  default_tags {
    tags = {
      app         = "kurz"
      environment = "production"
      managed-by  = "terraform"
    }
  }
}

# The region the table's backups are copied to (backup.tf): a vault there survives the loss of
# var.region.
provider "aws" {
  alias  = "backup_copy"
  region = var.backup_copy_region

  default_tags {
    tags = {
      app         = "kurz"
      environment = "production"
      managed-by  = "terraform"
    }
  }
}
