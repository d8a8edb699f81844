# Where the agent pushes backups. Entra ID only by default (no account keys, no SAS), reachable from the VM's subnet
# (service endpoint) and the management addresses, with versioning and soft delete so a bad retention run or a
# compromised writer cannot make a backup unrecoverable at once.
resource "azurerm_storage_account" "backups" {
  name                     = local.storage_account_name
  location                 = azurerm_resource_group.main.location
  resource_group_name      = azurerm_resource_group.main.name
  account_kind             = "StorageV2"
  account_tier             = "Standard"
  account_replication_type = var.storage_replication_type
  access_tier              = "Hot"
  tags                     = local.tags

  https_traffic_only_enabled        = true
  min_tls_version                   = "TLS1_2"
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = var.storage_shared_key_access_enabled
  default_to_oauth_authentication   = true
  cross_tenant_replication_enabled  = false
  infrastructure_encryption_enabled = true
  local_user_enabled                = false
  sftp_enabled                      = false
  allowed_copy_scope                = "AAD"

  # Only matters if shared keys are turned on: SAS tokens then live at most one hour.
  sas_policy {
    expiration_period = "00.01:00:00"
    expiration_action = "Block"
  }

  blob_properties {
    versioning_enabled = true

    delete_retention_policy {
      days = var.blob_soft_delete_days
    }

    container_delete_retention_policy {
      days = var.blob_soft_delete_days
    }
  }

  network_rules {
    default_action             = "Deny"
    bypass                     = ["AzureServices", "Logging", "Metrics"]
    virtual_network_subnet_ids = [azurerm_subnet.mongo.id]
    # The storage firewall takes single addresses without /32.
    ip_rules = [for c in var.management_public_cidrs : trimsuffix(c, "/32")]
  }

  lifecycle {
    # Deleting the account deletes every backup with it; soft delete does not cover that.
    prevent_destroy = true
  }
}

resource "azurerm_storage_container" "backups" {
  name                  = var.backup_container_name
  storage_account_id    = azurerm_storage_account.backups.id
  container_access_type = "private"
}

# Safety net behind the agent's own retention: old backups cool down, then go; old versions left behind by the
# agent's deletes are cleaned up after the soft-delete window.
resource "azurerm_storage_management_policy" "backups" {
  storage_account_id = azurerm_storage_account.backups.id

  rule {
    name    = "mongo-backups-safety-net"
    enabled = true

    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${var.backup_container_name}/${var.backup_prefix}/"]
    }

    actions {
      base_blob {
        tier_to_cool_after_days_since_modification_greater_than = var.lifecycle_cool_after_days
        delete_after_days_since_modification_greater_than       = var.lifecycle_delete_after_days
      }

      version {
        delete_after_days_since_creation = var.blob_soft_delete_days
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.lifecycle_delete_after_days >= var.lifecycle_cool_after_days + 30
      error_message = "lifecycle_delete_after_days must be at least lifecycle_cool_after_days + 30 (Cool bills a 30-day minimum stay)."
    }
  }
}

# Each VM's managed identity may read, write and delete blobs in the backup container only — not in other containers,
# and it cannot change the account. The same role covers the blob leases and heartbeats of replica-set mode.
resource "azurerm_role_assignment" "vm_backup_container" {
  count                = var.vm_count
  scope                = azurerm_storage_container.backups.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_linux_virtual_machine.mongo[count.index].identity[0].principal_id
  principal_type       = "ServicePrincipal"
}

# Who read, wrote or deleted which backup, kept in the Log Analytics workspace (aks.tf). Entra ID callers are logged
# with their object ID.
resource "azurerm_monitor_diagnostic_setting" "backups_blob" {
  name                       = "blob-access-to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.backups.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category = "StorageRead"
  }

  enabled_log {
    category = "StorageWrite"
  }

  enabled_log {
    category = "StorageDelete"
  }

  enabled_metric {
    category = "Transaction"
  }
}
