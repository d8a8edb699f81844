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
