# Container logs (the kicker Jobs' output outlives their pods here) and the AKS monitoring add-on.
resource "azurerm_log_analytics_workspace" "main" {
  name                = "log-${var.name_prefix}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  sku                 = "PerGB2018"
  retention_in_days   = 30
  tags                = local.tags

  # Ingestion and queries with Entra ID only (the AKS add-on uses its managed identity).
  local_authentication_enabled = false
}

resource "azurerm_kubernetes_cluster" "aks" {
  name                = "aks-${var.name_prefix}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  dns_prefix          = "aks-${var.name_prefix}"
  kubernetes_version  = var.aks_kubernetes_version
  sku_tier            = var.aks_sku_tier
  tags                = local.tags

  automatic_upgrade_channel = "patch"
  node_os_upgrade_channel   = "NodeImage"

  # Entra ID authentication with Azure RBAC; no static admin kubeconfig exists.
  role_based_access_control_enabled = true
  local_account_disabled            = true
  azure_active_directory_role_based_access_control {
    azure_rbac_enabled     = true
    tenant_id              = data.azurerm_client_config.current.tenant_id
    admin_group_object_ids = var.aks_admin_group_object_ids
  }

  api_server_access_profile {
    authorized_ip_ranges = var.management_public_cidrs
  }

  azure_policy_enabled = true

  # The Secrets Store CSI driver is the planned successor of the Kubernetes Secret: the trigger key already lives in
  # Key Vault (keyvault.tf).
  key_vault_secrets_provider {
    secret_rotation_enabled = true
  }

  oms_agent {
    log_analytics_workspace_id      = azurerm_log_analytics_workspace.main.id
    msi_auth_for_monitoring_enabled = true
  }

  identity {
    type = "SystemAssigned"
  }

  default_node_pool {
    name                        = "system"
    temporary_name_for_rotation = "systemtmp"
    vm_size                     = var.aks_node_vm_size
    node_count                  = var.aks_node_count
    vnet_subnet_id              = azurerm_subnet.aks.id
    max_pods                    = 110
    host_encryption_enabled     = var.encryption_at_host_enabled
    os_sku                      = "AzureLinux"

    upgrade_settings {
      max_surge = "10%"
    }
  }

  node_provisioning_profile {
    mode = "Manual"
  }

  # Azure CNI overlay with Cilium: NetworkPolicy (k8s/base/networkpolicy.yaml) is enforced, and pod traffic to the VM
  # leaves with the node's address, which is what the NSG and the key's from= restriction allow.
  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    network_data_plane  = "cilium"
    network_policy      = "cilium"
    pod_cidr            = var.aks_pod_cidr
    service_cidr        = var.aks_service_cidr
    dns_service_ip      = cidrhost(var.aks_service_cidr, 10)
    load_balancer_sku   = "standard"
    outbound_type       = "loadBalancer"
  }
}

# With a system-assigned identity and a subnet we own, AKS needs to manage the subnet (load balancer, routes).
resource "azurerm_role_assignment" "aks_network" {
  scope                = azurerm_subnet.aks.id
  role_definition_name = "Network Contributor"
  principal_id         = azurerm_kubernetes_cluster.aks.identity[0].principal_id
  principal_type       = "ServicePrincipal"
}

# The identity running terraform creates the namespace, Secret and ConfigMap through the kubernetes provider.
resource "azurerm_role_assignment" "deployer_aks_admin" {
  scope                = azurerm_kubernetes_cluster.aks.id
  role_definition_name = "Azure Kubernetes Service RBAC Cluster Admin"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_role_assignment" "aks_acr_pull" {
  count                = var.acr_id == null ? 0 : 1
  scope                = var.acr_id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_kubernetes_cluster.aks.kubelet_identity[0].object_id
  principal_type       = "ServicePrincipal"
}
