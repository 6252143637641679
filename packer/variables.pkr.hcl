variable "app_version" {
  type        = string
  description = "Version of server-responder the image carries; it names and tags the AMI and the box."
  default     = "0.1.0"

  validation {
    condition     = regex_replace(var.app_version, "^[0-9]+\\.[0-9]+\\.[0-9]+([.+-][0-9A-Za-z.+-]+)?$", "") == ""
    error_message = "The app_version must be a version such as 1.2.3 or 1.2.3.dev4."
  }
}

variable "debian_release" {
  type        = string
  description = "Debian major release of the image: 13 (trixie) or 12 (bookworm)."
  default     = "13"

  validation {
    condition     = contains(["12", "13"], var.debian_release)
    error_message = "The debian_release must be \"12\" or \"13\"."
  }
}

variable "ansible_playbook" {
  type        = string
  description = "Playbook that provisions the image; empty means the project's ansible/site.yml."
  default     = ""
}

variable "ansible_extra_arguments" {
  type        = list(string)
  description = "More ansible-playbook arguments, for example [\"--extra-vars\", \"@image-vars.yml\"]."
  default     = []
}

variable "testinfra_python" {
  type        = string
  description = "Python interpreter with pytest-testinfra that runs tests/infra against the machine being built."
  default     = "python3"
}

variable "testinfra_suite" {
  type        = string
  description = "Host test suite run against the machine being built, relative to the project root."
  default     = "tests/infra"
}

variable "testinfra_arguments" {
  type        = list(string)
  description = "More arguments for that run: --image checks the facts of an image before user data, --sudo runs checks as root."
  default     = ["--image", "--sudo"]
}

variable "output_directory" {
  type        = string
  description = "Directory for the qemu disk, the Vagrant box and the manifest; empty means packer/output."
  default     = ""
}

variable "aws_region" {
  type        = string
  description = "AWS region the AMI is built in."
  default     = "eu-west-1"

  validation {
    condition     = regex_replace(var.aws_region, "^[a-z]{2}(-[a-z]+)+-[0-9]$", "") == ""
    error_message = "The aws_region must be a region name such as eu-west-1."
  }
}

variable "aws_instance_type" {
  type        = string
  description = "EC2 instance type of the build instance."
  default     = "t3.small"
}

variable "aws_source_ami_owner" {
  type        = string
  description = "Account that publishes the official Debian AMIs."
  default     = "136693071363"

  validation {
    condition     = regex_replace(var.aws_source_ami_owner, "^[0-9]{12}$", "") == ""
    error_message = "The aws_source_ami_owner must be a 12-digit AWS account id."
  }
}

variable "aws_subnet_id" {
  type        = string
  description = "Subnet of the build instance; empty lets Packer use the default VPC."
  default     = ""
}

variable "aws_root_volume_gib" {
  type        = number
  description = "Size of the encrypted root volume, in GiB."
  default     = 8

  validation {
    condition     = var.aws_root_volume_gib >= 8 && var.aws_root_volume_gib <= 1024
    error_message = "The aws_root_volume_gib must be between 8 and 1024."
  }
}

variable "aws_kms_key_id" {
  type        = string
  description = "KMS key that encrypts the root volume; empty means the account's default EBS key."
  default     = ""
}

variable "qemu_base_image" {
  type        = string
  description = "Debian qcow2 the qemu source starts from (path or URL); empty means the cached debootstrap image."
  default     = ""
}

variable "qemu_base_image_checksum" {
  type        = string
  description = "Checksum of qemu_base_image, such as sha256:HEX, or \"none\"."
  default     = "none"
}

variable "qemu_accelerator" {
  type        = string
  description = "QEMU accelerator: kvm where hardware virtualisation works, tcg (software emulation) elsewhere."
  default     = "kvm"

  validation {
    condition     = contains(["kvm", "tcg", "hvf", "whpx", "xen"], var.qemu_accelerator)
    error_message = "The qemu_accelerator must be one of kvm, tcg, hvf, whpx, xen."
  }
}

variable "qemu_cpus" {
  type        = number
  description = "Virtual CPUs of the qemu build machine."
  default     = 2
}

variable "qemu_memory_mib" {
  type        = number
  description = "Memory of the qemu build machine, in MiB."
  default     = 2048

  validation {
    condition     = var.qemu_memory_mib >= 1024
    error_message = "The qemu_memory_mib must be at least 1024."
  }
}

variable "qemu_ssh_username" {
  type        = string
  description = "User the base image accepts SSH for; the Vagrant box keeps it."
  default     = "vagrant"
}

variable "qemu_ssh_private_key_file" {
  type        = string
  description = "Private key for qemu_ssh_username; by default Vagrant's insecure key, which the box keeps."
  default     = "${env("HOME")}/.vagrant.d/insecure_private_key"
}

locals {
  debian_codename  = { "12" = "bookworm", "13" = "trixie" }[var.debian_release]
  image_name       = "server-responder-${var.app_version}-debian-${var.debian_release}"
  build_time       = formatdate("YYYYMMDDhhmmss", timestamp())
  output_directory = var.output_directory != "" ? var.output_directory : "packer/output"
  ansible_playbook = var.ansible_playbook != "" ? var.ansible_playbook : "ansible/site.yml"
  qemu_base_image  = var.qemu_base_image != "" ? var.qemu_base_image : "/var/cache/server-responder-images/debian-${var.debian_release}-base.qcow2"
  qemu_cpu_model   = var.qemu_accelerator == "tcg" ? "qemu64" : "host"

  tags = {
    Application   = "server-responder"
    Version       = var.app_version
    DebianRelease = var.debian_release
    BuiltBy       = "packer"
  }
}
