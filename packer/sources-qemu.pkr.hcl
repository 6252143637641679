source "qemu" "debian" {
  disk_image       = true
  iso_url          = local.qemu_base_image
  iso_checksum     = var.qemu_base_image_checksum
  use_backing_file = false
  skip_resize_disk = true
  format           = "qcow2"
  disk_interface   = "virtio"
  net_device       = "virtio-net"
  disk_compression = true

  accelerator = var.qemu_accelerator
  cpus        = var.qemu_cpus
  memory      = var.qemu_memory_mib
  qemuargs    = [["-cpu", local.qemu_cpu_model]]
  headless    = true

  output_directory = "${local.output_directory}/qemu-debian-${var.debian_release}"
  vm_name          = "${local.image_name}.qcow2"

  communicator         = "ssh"
  ssh_username         = var.qemu_ssh_username
  ssh_private_key_file = var.qemu_ssh_private_key_file
  ssh_timeout          = "20m"
  host_port_min        = 2221
  host_port_max        = 2239
  shutdown_command     = "sudo systemctl poweroff"
  shutdown_timeout     = "10m"
}
