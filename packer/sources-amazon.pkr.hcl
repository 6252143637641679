source "amazon-ebs" "debian" {
  region        = var.aws_region
  instance_type = var.aws_instance_type
  subnet_id     = var.aws_subnet_id
  ssh_username  = "admin"
  ami_name      = "${local.image_name}-${local.build_time}"

  ami_description = "server-responder ${var.app_version} on Debian ${var.debian_release}"

  source_ami_filter {
    owners      = [var.aws_source_ami_owner]
    most_recent = true
    filters = {
      name                = "debian-${var.debian_release}-amd64-*"
      architecture        = "x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
  }

  # Instances launched from the AMI default to IMDSv2 only; the build instance requires it too.
  imds_support = "v2.0"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = var.aws_root_volume_gib
    volume_type           = "gp3"
    iops                  = 3000
    throughput            = 125
    encrypted             = true
    kms_key_id            = var.aws_kms_key_id
    delete_on_termination = true
  }

  tags          = merge(local.tags, { Name = local.image_name })
  snapshot_tags = merge(local.tags, { Name = local.image_name })
  run_tags      = merge(local.tags, { Name = "${local.image_name}-build" })
}
