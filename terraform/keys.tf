# The trigger key pair: the CronJob holds the private half (Kubernetes Secret, and Key Vault as the copy of record),
# the VM's mongo-backup-trigger user holds the public half with a forced command (output trigger_authorized_key,
# installed by the Ansible role). Rotation: docs/deploy.md.
resource "tls_private_key" "trigger" {
  algorithm = "ED25519"
}

resource "azurerm_key_vault" "main" {
  name                = local.key_vault_name
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tenant_id           = data.azurerm_client_config.current.tenant_id
  sku_name            = "standard"
  tags                = local.tags

  rbac_authorization_enabled    = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = true

  network_acls {
    default_action = "Deny"
    bypass         = "AzureServices"
    # Azure stores single addresses without /32; giving them that way avoids a diff on every plan.
    ip_rules = [for c in var.management_public_cidrs : trimsuffix(c, "/32")]
  }
}

# Terraform itself writes the secret below.
resource "azurerm_role_assignment" "deployer_key_vault" {
  scope                = azurerm_key_vault.main.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_key_vault_secret" "trigger_private_key" {
  name         = "mongo-backup-trigger-ssh-key"
  key_vault_id = azurerm_key_vault.main.id
  value        = tls_private_key.trigger.private_key_openssh
  content_type = "application/x-openssh-private-key"
  tags = {
    "public-key-sha256" = tls_private_key.trigger.public_key_fingerprint_sha256
  }

  depends_on = [azurerm_role_assignment.deployer_key_vault]
}

# Every read of the trigger key, by whom.
resource "azurerm_monitor_diagnostic_setting" "key_vault" {
  name                       = "key-vault-audit-to-log-analytics"
  target_resource_id         = azurerm_key_vault.main.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category = "AuditEvent"
  }
}

# Backup encryption: the age identity that opens the backups. The VM never gets it; it holds only the recipients
# (var.backup_encryption_recipients, into the agent's config through ansible_vars). Terraform creates the secret with
# a placeholder and never sees the key (it would sit in the state): an operator makes it with age-keygen on a
# workstation and stores it as a new version (docs/deploy.md, "Backup encryption"). Only the operators' group may
# read it, by a role on this one secret; the VM's identity has no role on this vault at all.
resource "azurerm_key_vault_secret" "backup_age_identity" {
  name         = "mongo-backup-age-identity"
  key_vault_id = azurerm_key_vault.main.id
  value        = "placeholder: store the age-keygen identity as a new version (docs/deploy.md)"
  content_type = "application/x-age-identity"

  lifecycle {
    ignore_changes = [value, content_type, tags]
  }

  depends_on = [azurerm_role_assignment.deployer_key_vault]
}

resource "azurerm_role_assignment" "operators_backup_age_identity" {
  scope                = azurerm_key_vault_secret.backup_age_identity.resource_manager_versionless_id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = var.backup_operators_group_object_id
  principal_type       = "Group"
}
