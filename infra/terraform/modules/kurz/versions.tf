terraform {
  # 1.6: lifecycle preconditions, `check`-free validation; nothing here needs newer.
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    # Secrets generated once and kept in state: the Redis auth token, the admin token, the id
    # permutation key and the API keys.
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}
