# Inputs of the whole stack. Every variable says what it changes; validations reject values Azure would only refuse
# halfway through an apply. terraform.tfvars.example shows a complete set.

variable "subscription_id" {
  description = "Azure subscription that holds the whole stack."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.subscription_id))
    error_message = "subscription_id must be a GUID such as 00000000-0000-0000-0000-000000000000."
  }
}

variable "location" {
  description = "Azure region for every resource, e.g. westeurope."
  type        = string
  default     = "westeurope"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]+$", var.location))
    error_message = "location must be a region name in lower case without spaces, e.g. westeurope."
  }
}

variable "name_prefix" {
  description = "Short prefix of every resource name; also seeds the globally unique storage account and Key Vault names."
  type        = string
  default     = "mongobk"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,11}$", var.name_prefix))
    error_message = "name_prefix must be 3-12 characters of lower-case letters and digits, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every Azure resource."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.tags : length(k) <= 512 && length(v) <= 256 && !can(regex("[<>%&\\\\?/]", k))])
    error_message = "Tag names must be at most 512 characters without < > % & \\ ? /, and values at most 256 characters."
  }
}

# ---------------------------------------------------------------------------------------------------------------------
# Network

variable "vnet_cidr" {
  description = "Address space of the virtual network shared by AKS and the MongoDB VM."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vnet_cidr, 0))
    error_message = "vnet_cidr must be an IPv4 CIDR such as 10.42.0.0/16."
  }
}

variable "aks_subnet_cidr" {
  description = "Subnet of the AKS nodes. Pod traffic leaves the nodes SNATed to node addresses (Azure CNI overlay), so this is the source the VM sees: the NSG and the trigger key's from= restriction allow exactly this range."
  type        = string
  default     = "10.42.0.0/20"

  validation {
    condition     = can(cidrhost(var.aks_subnet_cidr, 0))
    error_message = "aks_subnet_cidr must be an IPv4 CIDR inside vnet_cidr, e.g. 10.42.0.0/20."
  }
}

variable "mongo_subnet_cidr" {
  description = "Subnet of the MongoDB VMs. Member n (1-3) gets the fixed address cidrhost(mongo_subnet_cidr, 3 + n): .4 is the first one Azure does not reserve."
  type        = string
  default     = "10.42.16.0/28"

  validation {
    condition     = can(cidrhost(var.mongo_subnet_cidr, 4))
    error_message = "mongo_subnet_cidr must be an IPv4 CIDR of /28 or larger inside vnet_cidr, e.g. 10.42.16.0/28."
  }
}

variable "aks_pod_cidr" {
  description = "Overlay range for pod addresses (Azure CNI overlay); must not overlap the VNet or anything it is peered with."
  type        = string
  default     = "192.168.0.0/16"

  validation {
    condition     = can(cidrhost(var.aks_pod_cidr, 0))
    error_message = "aks_pod_cidr must be an IPv4 CIDR such as 192.168.0.0/16."
  }
}

variable "aks_service_cidr" {
  description = "Range for Kubernetes service addresses; the cluster DNS service gets cidrhost(aks_service_cidr, 10)."
  type        = string
  default     = "172.16.0.0/16"

  validation {
    condition     = can(cidrhost(var.aks_service_cidr, 10))
    error_message = "aks_service_cidr must be an IPv4 CIDR such as 172.16.0.0/16."
  }
}

variable "ssh_operator_cidrs" {
  description = "Sources, besides the AKS subnet, allowed to reach the VM on port 22 (VPN ranges, a bastion subnet, office addresses). Empty: only the CronJob can SSH in."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_operator_cidrs : can(cidrhost(c, 0))])
    error_message = "Every ssh_operator_cidrs entry must be an IPv4 CIDR such as 203.0.113.0/24 or 198.51.100.7/32."
  }
}

variable "management_public_cidrs" {
  description = "Public addresses of the machines that run terraform and kubectl (at least the one running terraform: it writes the trigger key into Key Vault). They are the only internet sources the AKS API server, the Key Vault firewall and the storage firewall accept."
  type        = list(string)

  validation {
    condition = length(var.management_public_cidrs) > 0 && alltrue([
      for c in var.management_public_cidrs : can(cidrhost(c, 0)) && !can(regex("^(10\\.|127\\.|169\\.254\\.|192\\.168\\.|172\\.(1[6-9]|2[0-9]|3[01])\\.)", c))
    ])
    error_message = "management_public_cidrs must list at least one public IPv4 CIDR (Key Vault and storage firewalls ignore private ranges)."
  }
}

variable "vm_public_ip_enabled" {
  description = "Give the VM a static public address, for operators who reach it from ssh_operator_cidrs over the internet instead of through a VPN. The CronJob always uses the private address."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------------------------------------------------------------
# AKS

variable "aks_kubernetes_version" {
  description = "Kubernetes minor version of the cluster, e.g. 1.33; null lets AKS pick its default at creation."
  type        = string
  default     = null

  validation {
    condition     = var.aks_kubernetes_version == null || can(regex("^1\\.[0-9]+(\\.[0-9]+)?$", var.aks_kubernetes_version))
    error_message = "aks_kubernetes_version must look like 1.33 or 1.33.2, or be null."
  }
}

variable "aks_sku_tier" {
  description = "AKS tier: Standard carries the uptime SLA, Free is for test environments."
  type        = string
  default     = "Standard"

  validation {
    condition     = contains(["Free", "Standard", "Premium"], var.aks_sku_tier)
    error_message = "aks_sku_tier must be Free, Standard or Premium."
  }
}

variable "aks_node_vm_size" {
  description = "VM size of the AKS system node pool."
  type        = string
  default     = "Standard_D4s_v5"

  validation {
    condition     = can(regex("^Standard_[A-Za-z0-9_]+$", var.aks_node_vm_size))
    error_message = "aks_node_vm_size must be an Azure VM size such as Standard_D4s_v5."
  }
}

variable "aks_node_count" {
  description = "Number of nodes in the AKS system node pool."
  type        = number
  default     = 2

  validation {
    condition     = var.aks_node_count >= 1 && var.aks_node_count <= 100 && floor(var.aks_node_count) == var.aks_node_count
    error_message = "aks_node_count must be a whole number from 1 to 100."
  }
}

variable "aks_admin_group_object_ids" {
  description = "Entra ID groups whose members get cluster-admin on AKS (the identity running terraform gets it too, through an Azure role assignment)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for g in var.aks_admin_group_object_ids : can(regex("^[0-9a-fA-F-]{36}$", g))])
    error_message = "aks_admin_group_object_ids must be object IDs (GUIDs)."
  }
}

variable "acr_id" {
  description = "Resource ID of an existing Azure Container Registry holding the kicker image; when set, the AKS kubelet identity gets AcrPull on it. Null: the image comes from a registry the nodes can already pull from."
  type        = string
  default     = null

  validation {
    condition     = var.acr_id == null || can(regex("^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.ContainerRegistry/registries/[^/]+$", var.acr_id))
    error_message = "acr_id must be a container registry resource ID (/subscriptions/…/providers/Microsoft.ContainerRegistry/registries/NAME) or null."
  }
}

variable "kicker_image" {
  description = "Full reference of the kicker image built from k8s/kicker/Dockerfile, preferably pinned by digest (REGISTRY/mongo-backup-kicker@sha256:…). It reaches the CronJob through the kustomize_env output."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+)?(@sha256:[0-9a-f]{64})?$", var.kicker_image)) && !can(regex(":latest$", var.kicker_image))
    error_message = "kicker_image must be REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:DIGEST, and not the latest tag."
  }
}

variable "encryption_at_host_enabled" {
  description = "Encrypt VM and AKS node temp disks and caches at the host. Needs the subscription feature Microsoft.Compute/EncryptionAtHost registered once (az feature register --namespace Microsoft.Compute --name EncryptionAtHost)."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------------------------------------------------
# MongoDB VM

variable "vm_count" {
  description = "MongoDB VMs: 1 (a single server, as before) or 3 (a replica set across availability zones 1, 2 and 3, an agent on every member; docs/scaling.md). Going from 1 to 3 keeps the first VM and adds two."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 3], var.vm_count)
    error_message = "vm_count must be 1 (one VM) or 3 (a three-member replica set): two members cannot elect a primary when one is down."
  }
}

variable "mongodb_replica_set_name" {
  description = "replication.replSetName cloud-init writes into every member's mongod.conf when vm_count = 3 (unused for one VM)."
  type        = string
  default     = "rs0"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,64}$", var.mongodb_replica_set_name))
    error_message = "mongodb_replica_set_name must be 1-64 letters, digits, '_' or '-'."
  }
}

variable "vm_size" {
  description = "VM size of the MongoDB server."
  type        = string
  default     = "Standard_D4s_v5"

  validation {
    condition     = can(regex("^Standard_[A-Za-z0-9_]+$", var.vm_size))
    error_message = "vm_size must be an Azure VM size such as Standard_D4s_v5."
  }
}

variable "vm_admin_username" {
  description = "Login of the VM's administrator account (key-only; the account the Ansible playbook connects as)."
  type        = string
  default     = "mongoadmin"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.vm_admin_username)) && !contains(["root", "admin", "administrator", "mongodb", "mongo-backup-trigger"], var.vm_admin_username)
    error_message = "vm_admin_username must be a lower-case Linux login and not root, admin, administrator, mongodb or mongo-backup-trigger."
  }
}

variable "vm_admin_ssh_public_key" {
  description = "OpenSSH public key of the VM administrator (one line, ssh-ed25519 or ssh-rsa of at least 2048 bits)."
  type        = string

  validation {
    condition     = can(regex("^(ssh-ed25519|ssh-rsa) [A-Za-z0-9+/]+={0,3}( .*)?$", trimspace(var.vm_admin_ssh_public_key)))
    error_message = "vm_admin_ssh_public_key must be one OpenSSH public key line starting with ssh-ed25519 or ssh-rsa."
  }
}

variable "vm_image" {
  description = "Marketplace image of the VM. The default, Ubuntu 20.04 LTS Gen2, is the newest Ubuntu that MongoDB 4.4 packages exist for; MongoDB 5.0+ can move to 22.04 (update mongodb_series too)."
  type = object({
    publisher = string
    offer     = string
    sku       = string
    version   = string
  })
  default = {
    publisher = "Canonical"
    offer     = "0001-com-ubuntu-server-focal"
    sku       = "20_04-lts-gen2"
    version   = "latest"
  }

  validation {
    condition     = var.vm_image.publisher == "Canonical"
    error_message = "vm_image must be a Canonical Ubuntu image: cloud-init's bootstrap script uses apt and the Ubuntu MongoDB repository."
  }
}

variable "os_disk_size_gb" {
  description = "Size of the VM's OS disk in GiB."
  type        = number
  default     = 64

  validation {
    condition     = var.os_disk_size_gb >= 30 && var.os_disk_size_gb <= 1024
    error_message = "os_disk_size_gb must be between 30 and 1024."
  }
}

variable "mongodb_series" {
  description = "MongoDB release series installed from MongoDB's apt repository, e.g. 4.4."
  type        = string
  default     = "4.4"

  validation {
    condition     = can(regex("^[4-9]\\.[0-9]$", var.mongodb_series))
    error_message = "mongodb_series must look like 4.4 (MongoDB 4.4 is the oldest server the agent supports)."
  }
}

variable "mongodb_data_disk_size_gb" {
  description = "Size in GiB of the managed disk mounted at /var/lib/mongodb."
  type        = number
  default     = 256

  validation {
    condition     = var.mongodb_data_disk_size_gb >= 32 && var.mongodb_data_disk_size_gb <= 32767
    error_message = "mongodb_data_disk_size_gb must be between 32 and 32767."
  }
}

variable "agent_deb_url" {
  description = "HTTPS URL of the mongo-backup-agent .deb that cloud-init installs at first boot. Empty: cloud-init skips it and the Ansible role installs the package."
  type        = string
  default     = ""

  validation {
    condition     = var.agent_deb_url == "" || can(regex("^https://[^\\s'\"]+\\.deb(\\?[^\\s'\"]*)?$", var.agent_deb_url))
    error_message = "agent_deb_url must be empty or an https:// URL of a .deb file."
  }
}

variable "agent_deb_sha256" {
  description = "SHA-256 of the .deb at agent_deb_url; cloud-init refuses a download that does not match. Required when agent_deb_url is set."
  type        = string
  default     = ""

  validation {
    condition     = var.agent_deb_sha256 == "" || can(regex("^[0-9a-f]{64}$", var.agent_deb_sha256))
    error_message = "agent_deb_sha256 must be empty or 64 lower-case hex digits."
  }
}

# ---------------------------------------------------------------------------------------------------------------------
# Backups in Blob storage

variable "storage_replication_type" {
  description = "Replication of the backup storage account. The default GZRS survives a zone outage and keeps a copy in the paired region, so a regional disaster does not take the database and its backups together."
  type        = string
  default     = "GZRS"

  validation {
    condition     = contains(["GRS", "RAGRS", "GZRS", "RAGZRS"], var.storage_replication_type)
    error_message = "storage_replication_type must be geo-redundant: GRS, RAGRS, GZRS or RAGZRS."
  }
}

variable "storage_shared_key_access_enabled" {
  description = "Allow account-key and SAS access to the backup storage account. Off: only Entra ID identities (the VM's managed identity, operators with a data role) can read or write blobs."
  type        = bool
  default     = false
}

variable "backup_container_name" {
  description = "Blob container the agent writes to ([storage] container in the agent's config)."
  type        = string
  default     = "mongodb-backups"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", var.backup_container_name)) && length(regexall("--", var.backup_container_name)) == 0
    error_message = "backup_container_name must be 3-63 characters of lower-case letters, digits and single hyphens, starting and ending with a letter or digit."
  }
}

variable "backup_prefix" {
  description = "Blob name prefix under which the agent stores this server's backups ([storage] prefix in the agent's config); the lifecycle rule matches it."
  type        = string
  default     = "mongodb"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.backup_prefix))
    error_message = "backup_prefix must be path segments of letters, digits, '.', '_' or '-' joined by '/', without leading or trailing '/'."
  }
}

variable "blob_soft_delete_days" {
  description = "Days a deleted or overwritten backup blob (and a deleted container) stays recoverable."
  type        = number
  default     = 14

  validation {
    condition     = var.blob_soft_delete_days >= 1 && var.blob_soft_delete_days <= 365
    error_message = "blob_soft_delete_days must be between 1 and 365."
  }
}

variable "lifecycle_cool_after_days" {
  description = "Safety net behind the agent's own retention: backups not modified for this many days move to the Cool tier."
  type        = number
  default     = 30

  validation {
    condition     = var.lifecycle_cool_after_days >= 1 && var.lifecycle_cool_after_days <= 99999
    error_message = "lifecycle_cool_after_days must be between 1 and 99999."
  }
}

variable "lifecycle_delete_after_days" {
  description = "Safety net behind the agent's own retention: backups not modified for this many days are deleted (soft delete and versioning still apply). Must be at least lifecycle_cool_after_days + 30, Cool's minimum billed stay."
  type        = number
  default     = 400

  validation {
    condition     = var.lifecycle_delete_after_days >= 31 && var.lifecycle_delete_after_days <= 99999
    error_message = "lifecycle_delete_after_days must be between 31 and 99999."
  }
}

variable "backup_encryption_recipients" {
  description = "age X25519 recipients (public keys, age1…) every backup is encrypted to; the VM gets only these (ansible_vars). The identities stay with the operators (Key Vault secret mongo-backup-age-identity). Empty: backups are not encrypted."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.backup_encryption_recipients : can(regex("^age1[02-9ac-hj-np-z]{58}$", r))])
    error_message = "Each backup_encryption_recipients entry must be an age X25519 public key (age1 followed by 58 bech32 characters), as age-keygen prints it."
  }
}

variable "backup_operators_group_object_id" {
  description = "Object id of the Entra ID group whose members may read the backup decryption key (Key Vault secret mongo-backup-age-identity) to restore. The VM's identity can never read it."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.backup_operators_group_object_id))
    error_message = "backup_operators_group_object_id must be an Entra ID object id (a GUID)."
  }
}
