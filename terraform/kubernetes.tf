# What the CronJob in k8s/ reads at run time, written from this state so nobody types an address or a key into a YAML.
# k8s/base creates the same namespace with the same labels, so applying either first is fine.
resource "kubernetes_namespace_v1" "backup" {
  metadata {
    name   = local.k8s_namespace
    labels = local.k8s_namespace_labels
  }

  depends_on = [azurerm_role_assignment.deployer_aks_admin]
}

resource "kubernetes_secret_v1" "ssh" {
  metadata {
    name      = local.k8s_ssh_secret_name
    namespace = kubernetes_namespace_v1.backup.metadata[0].name
    labels = {
      "app.kubernetes.io/part-of" = "mongo-backup-agent"
    }
  }

  type = "Opaque"
  data = {
    id_ed25519  = tls_private_key.trigger.private_key_openssh
    known_hosts = local.known_hosts
    host        = local.mongo_vm_private_ip
  }
}

resource "kubernetes_config_map_v1" "target" {
  metadata {
    name      = local.k8s_target_cm_name
    namespace = kubernetes_namespace_v1.backup.metadata[0].name
    labels = {
      "app.kubernetes.io/part-of" = "mongo-backup-agent"
    }
  }

  # hosts: every member, in the order the CronJob tries them (space-separated). host: the first member, which is all
  # a CronJob from before replica-set support reads.
  data = {
    host  = local.mongo_vm_private_ip
    hosts = join(" ", local.mongo_member_ips)
    port  = tostring(local.mongo_ssh_port)
  }
}
