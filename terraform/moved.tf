# The per-member resources gained `count` with vm_count (members.tf). These keep the single VM of earlier versions
# at index 0, so upgrading with vm_count = 1 plans no change, and going to 3 adds members 2 and 3 next to it instead
# of replacing the VM and its data disk (prevent_destroy would stop that anyway).
moved {
  from = tls_private_key.vm_host_ed25519
  to   = tls_private_key.vm_host_ed25519[0]
}

moved {
  from = azurerm_network_interface.mongo
  to   = azurerm_network_interface.mongo[0]
}

moved {
  from = azurerm_linux_virtual_machine.mongo
  to   = azurerm_linux_virtual_machine.mongo[0]
}

moved {
  from = azurerm_managed_disk.mongo_data
  to   = azurerm_managed_disk.mongo_data[0]
}

moved {
  from = azurerm_virtual_machine_data_disk_attachment.mongo_data
  to   = azurerm_virtual_machine_data_disk_attachment.mongo_data[0]
}

moved {
  from = azurerm_role_assignment.vm_backup_container
  to   = azurerm_role_assignment.vm_backup_container[0]
}
