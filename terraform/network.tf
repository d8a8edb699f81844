resource "azurerm_resource_group" "main" {
  name     = "rg-${var.name_prefix}"
  location = var.location
  tags     = local.tags
}

resource "azurerm_virtual_network" "main" {
  name                = "vnet-${var.name_prefix}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  address_space       = [var.vnet_cidr]
  tags                = local.tags
}

resource "azurerm_subnet" "aks" {
  name                 = "snet-aks"
  resource_group_name  = azurerm_resource_group.main.name
  virtual_network_name = azurerm_virtual_network.main.name
  address_prefixes     = [var.aks_subnet_cidr]
}

# AKS manages its own NSG on the node NICs; this one on the subnet holds no rules of its own (Azure's defaults apply)
# and is where cluster-wide network rules would go.
resource "azurerm_network_security_group" "aks" {
  name                = "nsg-${var.name_prefix}-aks"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_subnet_network_security_group_association" "aks" {
  subnet_id                 = azurerm_subnet.aks.id
  network_security_group_id = azurerm_network_security_group.aks.id
}

resource "azurerm_subnet" "mongo" {
  name                 = "snet-mongo"
  resource_group_name  = azurerm_resource_group.main.name
  virtual_network_name = azurerm_virtual_network.main.name
  address_prefixes     = [var.mongo_subnet_cidr]

  # Egress goes through the NAT gateway below, never through Azure's implicit default outbound address.
  default_outbound_access_enabled = false

  # Blob traffic from the VM stays on the Azure backbone and is what the storage firewall admits.
  service_endpoint {
    service = "Microsoft.Storage"
  }
}

# The VM needs outbound HTTPS for apt (Ubuntu, MongoDB repository), Entra ID tokens and Blob.
resource "azurerm_public_ip" "nat" {
  name                = "pip-${var.name_prefix}-nat"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  allocation_method   = "Static"
  sku                 = "Standard"
  tags                = local.tags
}

resource "azurerm_nat_gateway" "mongo" {
  name                = "ng-${var.name_prefix}-mongo"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  sku_name            = "Standard"
  tags                = local.tags
}

resource "azurerm_nat_gateway_public_ip_association" "mongo" {
  nat_gateway_id       = azurerm_nat_gateway.mongo.id
  public_ip_address_id = azurerm_public_ip.nat.id
}

resource "azurerm_subnet_nat_gateway_association" "mongo" {
  subnet_id      = azurerm_subnet.mongo.id
  nat_gateway_id = azurerm_nat_gateway.mongo.id
}

# Inbound to the MongoDB subnet: SSH only from the AKS nodes (the CronJob) and the operators, MongoDB only from AKS
# (the apps) and, in a replica set, from the other members; nothing else — the explicit deny overrides Azure's default
# AllowVnetInBound, also between the members.
resource "azurerm_network_security_group" "mongo" {
  name                = "nsg-${var.name_prefix}-mongo"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags

  security_rule {
    name                       = "allow-ssh-from-aks"
    description                = "The hourly CronJob's ssh kick; pod traffic is SNATed to node addresses."
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_range     = tostring(local.mongo_ssh_port)
    source_address_prefix      = var.aks_subnet_cidr
    destination_address_prefix = local.mongo_members_nsg_prefix
  }

  dynamic "security_rule" {
    for_each = length(var.ssh_operator_cidrs) > 0 ? [1] : []
    content {
      name                       = "allow-ssh-from-operators"
      description                = "Operators' SSH (ssh_operator_cidrs)."
      priority                   = 110
      direction                  = "Inbound"
      access                     = "Allow"
      protocol                   = "Tcp"
      source_port_range          = "*"
      destination_port_range     = tostring(local.mongo_ssh_port)
      source_address_prefixes    = var.ssh_operator_cidrs
      destination_address_prefix = local.mongo_members_nsg_prefix
    }
  }

  security_rule {
    name                       = "allow-mongodb-from-aks"
    description                = "The applications on AKS use MongoDB."
    priority                   = 200
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_range     = tostring(local.mongo_port)
    source_address_prefix      = var.aks_subnet_cidr
    destination_address_prefix = local.mongo_members_nsg_prefix
  }

  # Replication and elections between the members (vm_count = 3); a single VM has no such rule, as before.
  dynamic "security_rule" {
    for_each = var.vm_count > 1 ? [1] : []
    content {
      name                       = "allow-mongodb-between-members"
      description                = "Replica set members replicate and vote with each other."
      priority                   = 210
      direction                  = "Inbound"
      access                     = "Allow"
      protocol                   = "Tcp"
      source_port_range          = "*"
      destination_port_range     = tostring(local.mongo_port)
      source_address_prefix      = local.mongo_members_nsg_prefix
      destination_address_prefix = local.mongo_members_nsg_prefix
    }
  }

  security_rule {
    name                       = "allow-azure-load-balancer"
    description                = "Azure platform health probes."
    priority                   = 4000
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "*"
    source_port_range          = "*"
    destination_port_range     = "*"
    source_address_prefix      = "AzureLoadBalancer"
    destination_address_prefix = "*"
  }

  security_rule {
    name                       = "deny-all-other-inbound"
    description                = "Overrides AllowVnetInBound: the rest of the VNet, peered networks and the internet get nothing."
    priority                   = 4096
    direction                  = "Inbound"
    access                     = "Deny"
    protocol                   = "*"
    source_port_range          = "*"
    destination_port_range     = "*"
    source_address_prefix      = "*"
    destination_address_prefix = "*"
  }
}

resource "azurerm_subnet_network_security_group_association" "mongo" {
  subnet_id                 = azurerm_subnet.mongo.id
  network_security_group_id = azurerm_network_security_group.mongo.id
}
