# The MongoDB VMs, one per member of local.mongo_members (members.tf): one, or three across availability zones. Member 1
# keeps the names and addresses of the single VM of earlier versions (moved.tf maps its old addresses to index 0).

# Each VM's SSH host key is made here and handed to the VM by cloud-init, so the CronJob's known_hosts is known before
# the VM first boots: no trust on first use. Rotating it: see docs/deploy.md.
resource "tls_private_key" "vm_host_ed25519" {
  count     = var.vm_count
  algorithm = "ED25519"
}

resource "azurerm_public_ip" "vm" {
  count               = var.vm_public_ip_enabled ? var.vm_count : 0
  name                = "pip-${var.name_prefix}-mongo${local.mongo_members[count.index].suffix}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  allocation_method   = "Static"
  sku                 = "Standard"
  tags                = local.tags
}

resource "azurerm_network_interface" "mongo" {
  count               = var.vm_count
  name                = "nic-${var.name_prefix}-mongo${local.mongo_members[count.index].suffix}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = azurerm_subnet.mongo.id
    private_ip_address_allocation = "Static"
    private_ip_address            = local.mongo_members[count.index].private_ip
    public_ip_address_id          = var.vm_public_ip_enabled ? azurerm_public_ip.vm[count.index].id : null
  }
}

resource "azurerm_linux_virtual_machine" "mongo" {
  count                 = var.vm_count
  name                  = "vm-${var.name_prefix}-mongo${local.mongo_members[count.index].suffix}"
  location              = azurerm_resource_group.main.location
  resource_group_name   = azurerm_resource_group.main.name
  zone                  = local.mongo_members[count.index].zone
  size                  = var.vm_size
  network_interface_ids = [azurerm_network_interface.mongo[count.index].id]
  tags                  = local.tags

  admin_username                  = var.vm_admin_username
  disable_password_authentication = true
  admin_ssh_key {
    username   = var.vm_admin_username
    public_key = trimspace(var.vm_admin_ssh_public_key)
  }

  # The agent authenticates to Blob with this identity (config: auth = "managed-identity"); storage.tf grants each
  # member's identity Storage Blob Data Contributor on the backup container only.
  identity {
    type = "SystemAssigned"
  }

  source_image_reference {
    publisher = var.vm_image.publisher
    offer     = var.vm_image.offer
    sku       = var.vm_image.sku
    version   = var.vm_image.version
  }

  os_disk {
    name                 = "osdisk-${var.name_prefix}-mongo${local.mongo_members[count.index].suffix}"
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
    disk_size_gb         = var.os_disk_size_gb
  }

  custom_data                = base64encode(local.cloud_init[count.index])
  encryption_at_host_enabled = var.encryption_at_host_enabled
  secure_boot_enabled        = true
  vtpm_enabled               = true
  allow_extension_operations = false

  boot_diagnostics {}

  lifecycle {
    precondition {
      condition     = var.agent_deb_url == "" || var.agent_deb_sha256 != ""
      error_message = "agent_deb_sha256 is required when agent_deb_url is set: the VM refuses an unverified package."
    }

    # cloud-init runs once, at first boot; later changes (a new agent .deb, a new host key) are rolled out by the
    # Ansible role, not by replacing the VM that holds the database.
    ignore_changes = [custom_data]
  }
}

resource "azurerm_managed_disk" "mongo_data" {
  count                         = var.vm_count
  name                          = "disk-${var.name_prefix}-mongo-data${local.mongo_members[count.index].suffix}"
  location                      = azurerm_resource_group.main.location
  resource_group_name           = azurerm_resource_group.main.name
  zone                          = local.mongo_members[count.index].zone # a zonal VM attaches disks of its own zone only
  storage_account_type          = "Premium_LRS"
  create_option                 = "Empty"
  disk_size_gb                  = var.mongodb_data_disk_size_gb
  public_network_access_enabled = false
  network_access_policy         = "DenyAll"
  tags                          = local.tags

  lifecycle {
    prevent_destroy = true
  }
}

# LUN 0 is what the bootstrap script waits for (/dev/disk/azure/scsi1/lun0) before it installs MongoDB.
resource "azurerm_virtual_machine_data_disk_attachment" "mongo_data" {
  count              = var.vm_count
  managed_disk_id    = azurerm_managed_disk.mongo_data[count.index].id
  virtual_machine_id = azurerm_linux_virtual_machine.mongo[count.index].id
  lun                = 0
  caching            = "ReadOnly"
}
