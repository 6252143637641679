build {
  sources = ["source.amazon-ebs.debian", "source.qemu.debian"]

  provisioner "ansible" {
    playbook_file = local.ansible_playbook
    use_proxy     = false
    # An image leaves its services stopped and carries no secret, token or TLS key (see the roles).
    extra_arguments = concat(
      ["--extra-vars", jsonencode({ server_responder_image_build = true, nginx_tls_image_build = true })],
      var.ansible_extra_arguments,
    )
    ansible_env_vars = [
      "ANSIBLE_HOST_KEY_CHECKING=False",
      "ANSIBLE_PIPELINING=True",
    ]
  }

  # The image is saved only if the host test suite passes against the machine being built.
  provisioner "shell-local" {
    script = "packer/scripts/testinfra"
    environment_vars = [
      "TESTINFRA_PYTHON=${var.testinfra_python}",
      "TESTINFRA_SUITE=${var.testinfra_suite}",
      "TESTINFRA_ARGUMENTS=${join(" ", var.testinfra_arguments)}",
      "TESTINFRA_HOST=${build.Host}",
      "TESTINFRA_PORT=${build.Port}",
      "TESTINFRA_USER=${build.User}",
      "TESTINFRA_PRIVATE_KEY=${build.SSHPrivateKey}",
      "TESTINFRA_PRIVATE_KEY_FILE=${var.qemu_ssh_private_key_file}",
    ]
  }

  # Every machine started from the image gets its own identity (and DHCP lease) on first boot.
  provisioner "shell" {
    inline = [
      "sudo apt-get clean",
      "sudo truncate -s 0 /etc/machine-id",
      "sudo rm -f /var/lib/dbus/machine-id",
    ]
  }

  post-processors {
    post-processor "vagrant" {
      only   = ["qemu.debian"]
      output = "${local.output_directory}/${local.image_name}-libvirt.box"
    }

    post-processor "manifest" {
      output     = "${local.output_directory}/manifest.json"
      strip_path = true
    }
  }
}
