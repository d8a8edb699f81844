output "resource_group_name" {
  description = "Resource group of the whole stack."
  value       = azurerm_resource_group.main.name
}

output "aks_cluster_name" {
  description = "Name of the AKS cluster."
  value       = azurerm_kubernetes_cluster.aks.name
}

output "aks_get_credentials_command" {
  description = "Command that writes a kubeconfig for the cluster (then run `kubelogin convert-kubeconfig -l azurecli`)."
  value       = "az aks get-credentials --resource-group ${azurerm_resource_group.main.name} --name ${azurerm_kubernetes_cluster.aks.name}"
}

output "mongo_vm_private_ip" {
  description = "Private address of the (first) MongoDB VM: with vm_count = 1 what the CronJob connects to and the apps' MongoDB host."
  value       = azurerm_network_interface.mongo[0].private_ip_address
}

output "mongo_vm_public_ip" {
  description = "Public address of the (first) VM when vm_public_ip_enabled, else null."
  value       = var.vm_public_ip_enabled ? azurerm_public_ip.vm[0].ip_address : null
}

output "mongo_members" {
  description = "Every MongoDB VM in member order (the order the CronJob tries them): name, private and public address, zone, the identity the agent uses for Blob, and the SSH host key fingerprint."
  value = [for i in range(var.vm_count) : {
    name                     = azurerm_linux_virtual_machine.mongo[i].name
    private_ip               = azurerm_network_interface.mongo[i].private_ip_address
    public_ip                = var.vm_public_ip_enabled ? azurerm_public_ip.vm[i].ip_address : null
    zone                     = local.mongo_members[i].zone
    principal_id             = azurerm_linux_virtual_machine.mongo[i].identity[0].principal_id
    ssh_host_key_fingerprint = tls_private_key.vm_host_ed25519[i].public_key_fingerprint_sha256
  }]
}

output "mongo_member_private_ips" {
  description = "Private addresses of all MongoDB VMs in member order: ansible_host of each inventory line, and the CronJob's host list (ConfigMap mongo-backup-target, key hosts)."
  value       = azurerm_network_interface.mongo[*].private_ip_address
}

output "mongodb_replica_set_config" {
  description = "With vm_count = 3: the rs.initiate() document of the replica set (members by private address), for the one-time step in docs/scaling.md. Null for a single VM."
  value       = local.mongodb_replica_set_config
}

output "mongo_vm_admin_username" {
  description = "Administrator login of the VM (ansible_user in the Ansible inventory)."
  value       = var.vm_admin_username
}

output "mongo_vm_principal_id" {
  description = "Object ID of the (first) VM's system-assigned managed identity, the identity the agent uses for Blob (every member's: mongo_members)."
  value       = azurerm_linux_virtual_machine.mongo[0].identity[0].principal_id
}

output "ssh_host_key_fingerprint" {
  description = "SHA256 fingerprint of the (first) VM's SSH host key; compare with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the VM (every member's: mongo_members)."
  value       = tls_private_key.vm_host_ed25519[0].public_key_fingerprint_sha256
}

output "ssh_host_public_keys" {
  description = "Each VM's SSH host public key (ssh_host_ed25519_key.pub), in member order."
  value       = [for k in tls_private_key.vm_host_ed25519[*] : trimspace(k.public_key_openssh)]
}

output "ssh_host_private_keys" {
  description = "Each VM's SSH host private key, in member order. cloud-init installs them at first boot; read one only to install a rotated host key (docs/deploy.md)."
  value       = tls_private_key.vm_host_ed25519[*].private_key_openssh
  sensitive   = true
}

output "known_hosts" {
  description = "The known_hosts lines the CronJob pins, one per member under the alias mongo-backup-vm (same content as the Secret's known_hosts key)."
  value       = local.known_hosts
}

output "trigger_authorized_key" {
  description = "The authorized_keys line the VM user mongo-backup-trigger ends up with (the Ansible role writes it from ansible_vars): the trigger public key with restrict, from= the AKS subnet and the forced command."
  value       = local.trigger_authorized_key
}

output "trigger_public_key_fingerprint" {
  description = "SHA256 fingerprint of the trigger key, to check which key the VM and the Secret hold during a rotation."
  value       = tls_private_key.trigger.public_key_fingerprint_sha256
}

output "storage_account_name" {
  description = "Storage account holding the backups ([storage] account in the agent's config)."
  value       = azurerm_storage_account.backups.name
}

output "backup_container_name" {
  description = "Blob container holding the backups ([storage] container in the agent's config)."
  value       = azurerm_storage_container.backups.name
}

output "backup_blob_url" {
  description = "URL under which this server's backups live."
  value       = "${azurerm_storage_account.backups.primary_blob_endpoint}${azurerm_storage_container.backups.name}/${var.backup_prefix}/"
}

output "ansible_vars" {
  description = "Variables for the Ansible role mongo_backup_agent from this stack (Blob target, trigger key with its from= restriction, backup encryption recipients, replica-set mode): terraform output -json ansible_vars > terraform-vars.json, then ansible-playbook … -e @../terraform/terraform-vars.json"
  value = {
    mongo_backup_agent_storage = {
      kind      = "azure"
      account   = azurerm_storage_account.backups.name
      container = azurerm_storage_container.backups.name
      prefix    = var.backup_prefix
      auth      = "managed-identity"
    }
    mongo_backup_agent_trigger_keys = [{
      key  = "${trimspace(tls_private_key.trigger.public_key_openssh)} ${local.trigger_user}@aks"
      from = [var.aks_subnet_cidr]
    }]
    # Public keys only: the VM can encrypt backups but not read them back.
    mongo_backup_agent_encryption = {
      recipients = var.backup_encryption_recipients
    }
    # Replica-set mode on every member when there are three (each names itself by its inventory_hostname); empty
    # for one VM, so its config has no [cluster] section, as before.
    mongo_backup_agent_cluster = { for k, v in { enabled = true } : k => v if var.vm_count > 1 }
  }
}

output "key_vault_name" {
  description = "Key Vault holding the trigger private key."
  value       = azurerm_key_vault.main.name
}

output "trigger_key_secret_id" {
  description = "Versionless ID of the Key Vault secret with the trigger private key."
  value       = azurerm_key_vault_secret.trigger_private_key.versionless_id
}

output "kubernetes_namespace" {
  description = "Namespace of the CronJob, its Secret and ConfigMap."
  value       = kubernetes_namespace_v1.backup.metadata[0].name
}

output "kustomize_env" {
  description = "Contents of k8s/overlays/aks/target.env, the values the overlay substitutes into the manifests: terraform output -raw kustomize_env > ../k8s/overlays/aks/target.env"
  value       = <<-EOT
    # Generated by `terraform output -raw kustomize_env`; do not edit by hand.
    MONGO_VM_CIDR=${local.mongo_members_cidr}
    KICKER_IMAGE=${var.kicker_image}
  EOT
}
