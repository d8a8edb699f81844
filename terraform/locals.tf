data "azurerm_client_config" "current" {}

locals {
  # Globally unique names derive from the subscription and the prefix, so they are stable across plans without a
  # random provider: 6 hex digits of a hash.
  name_suffix          = substr(sha1("${var.subscription_id}/${var.name_prefix}"), 0, 6)
  storage_account_name = "${var.name_prefix}bk${local.name_suffix}"
  key_vault_name       = "kv-${var.name_prefix}-${local.name_suffix}"

  tags = merge(var.tags, {
    "app.kubernetes.io/part-of" = "mongo-backup-agent"
    "managed-by"                = "terraform"
  })

  mongo_ssh_port = 22

  # The CronJob names the VM by this alias in ssh (-o HostKeyAlias=…), so known_hosts does not depend on the VM's
  # address or the port; k8s/base/cronjob.yaml must use the same string (tests/infra checks both sides).
  ssh_host_key_alias = "mongo-backup-vm"
  # One line per member, all under the alias: whichever member answers must present one of the members' keys.
  known_hosts = join("", [for i in range(var.vm_count) : "${local.ssh_host_key_alias} ${trimspace(tls_private_key.vm_host_ed25519[i].public_key_openssh)}\n"])

  # What the VM's sshd runs for the trigger key, whatever the client asks for: the agent reads SSH_ORIGINAL_COMMAND
  # (run-now | status; anything else exits 2). restrict = no pty, no forwarding, no agent, no X11, no ~/.ssh/rc.
  trigger_user           = "mongo-backup-trigger"
  trigger_forced_command = "/usr/bin/mongo-backup-agent trigger"
  trigger_authorized_key = "restrict,from=\"${var.aks_subnet_cidr}\",command=\"${local.trigger_forced_command}\" ${trimspace(tls_private_key.trigger.public_key_openssh)} ${local.trigger_user}@aks"

  # Kubernetes objects Terraform creates; the CronJob in k8s/base refers to them by these names and keys.
  k8s_namespace       = "backup"
  k8s_ssh_secret_name = "mongo-backup-ssh"
  k8s_target_cm_name  = "mongo-backup-target"
  k8s_namespace_labels = {
    "app.kubernetes.io/part-of"                  = "mongo-backup-agent"
    "pod-security.kubernetes.io/enforce"         = "restricted"
    "pod-security.kubernetes.io/enforce-version" = "latest"
    "pod-security.kubernetes.io/warn"            = "restricted"
    "pod-security.kubernetes.io/audit"           = "restricted"
  }

  bootstrap_script = templatefile("${path.module}/templates/bootstrap.sh.tftpl", {
    mongodb_series   = var.mongodb_series
    agent_deb_url    = var.agent_deb_url
    agent_deb_sha256 = var.agent_deb_sha256
    data_disk_lun    = 0
    replica_set_name = local.mongodb_replica_set_name
  })

  # One cloud-config per member: each VM gets its own SSH host key.
  cloud_init = [for i in range(var.vm_count) : templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
    host_key_private = tls_private_key.vm_host_ed25519[i].private_key_openssh
    host_key_public  = trimspace(tls_private_key.vm_host_ed25519[i].public_key_openssh)
    bootstrap_script = local.bootstrap_script
  })]
}
