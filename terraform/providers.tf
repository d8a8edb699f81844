provider "azurerm" {
  subscription_id = var.subscription_id

  # The storage account has shared-key access off, so data-plane calls the provider makes must use Entra ID.
  storage_use_azuread = true

  features {
    key_vault {
      # Keep the trigger key recoverable if the vault is destroyed by mistake (purge protection is on anyway).
      purge_soft_delete_on_destroy    = false
      recover_soft_deleted_key_vaults = true
    }
    resource_group {
      prevent_deletion_if_contains_resources = true
    }
  }
}

# The cluster has local accounts disabled (Entra ID + Azure RBAC only), so the provider gets a token through kubelogin,
# using the same `az login` session as azurerm. The deployer is granted "Azure Kubernetes Service RBAC Cluster Admin"
# in aks.tf. 6dae42f8-… is the fixed application ID of the AKS Entra ID server app.
provider "kubernetes" {
  host                   = azurerm_kubernetes_cluster.aks.kube_config[0].host
  cluster_ca_certificate = base64decode(azurerm_kubernetes_cluster.aks.kube_config[0].cluster_ca_certificate)

  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "kubelogin"
    args        = ["get-token", "--login", "azurecli", "--server-id", "6dae42f8-4368-4678-94ff-3960e28e3630"]
  }
}
