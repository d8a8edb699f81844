# The MongoDB members, in order: one VM, or a three-member replica set across availability zones 1, 2 and 3
# (docs/scaling.md). This file reads variables only, so tests/infra evaluates it with a real terraform for both counts.
#
# Member 1 keeps the names, the address and the zone-less placement of the single VM of earlier versions, so
# vm_count = 1 is the same stack as before; members 2 and 3 take the next addresses and the suffixes -2 and -3.
locals {
  mongo_port = 27017

  # The first member's address is the first host Azure does not reserve (.0-.3 are Azure's).
  mongo_members = [for i in range(var.vm_count) : {
    # Appended to every per-member resource name ("vm-<prefix>-mongo", "vm-<prefix>-mongo-2", …).
    suffix     = i == 0 ? "" : "-${i + 1}"
    private_ip = cidrhost(var.mongo_subnet_cidr, 4 + i)
    # A single VM stays out of zones (moving it into one would replace it); members spread over zones 1/2/3.
    zone = var.vm_count == 1 ? null : tostring(i + 1)
  }]

  # Member 1: the VM's address of earlier versions, still the single-host value of the CronJob's ConfigMap.
  mongo_vm_private_ip = local.mongo_members[0].private_ip
  # The members' addresses, in the order the CronJob tries them.
  mongo_member_ips = [for m in local.mongo_members : m.private_ip]

  # What the NSG rules allow: the one address as before (no diff for vm_count = 1), or the /30 that holds the three
  # members (.4, .5, .6; .7 is unused, and nothing else lives in the MongoDB subnet).
  mongo_members_nsg_prefix = var.vm_count == 1 ? local.mongo_vm_private_ip : "${local.mongo_vm_private_ip}/30"
  # The same block as a CIDR, for the kicker's NetworkPolicy (through the kustomize_env output).
  mongo_members_cidr = "${local.mongo_vm_private_ip}/${var.vm_count == 1 ? 32 : 30}"

  # cloud-init writes replication.replSetName only for a replica set; a single VM keeps the package's mongod.conf.
  mongodb_replica_set_name = var.vm_count == 1 ? "" : var.mongodb_replica_set_name
  # The rs.initiate() document for the operator's one-time step (docs/scaling.md); null for a single VM.
  mongodb_replica_set_config = var.vm_count == 1 ? null : jsonencode({
    _id = var.mongodb_replica_set_name
    members = [for i, m in local.mongo_members : {
      _id  = i
      host = "${m.private_ip}:${local.mongo_port}"
    }]
  })
}
