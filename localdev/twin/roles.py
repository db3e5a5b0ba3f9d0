"""Built-in Azure role definitions the twin knows (real ids; action lists abridged to what matters here)."""

from __future__ import annotations

from typing import Any

RELEASE_USER = "08bbd89e-9f13-488c-ac41-acfcb10c90ab"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
USER_ACCESS_ADMIN = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"
RBAC_ADMIN = "f58310d9-a9f6-439a-9e8d-f62e7b41a168"
KV_ADMIN = "00482a5a-887f-4fb3-b363-3b7fe8e74483"
KV_CRYPTO_OFFICER = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"
KV_CRYPTO_USER = "12338af0-0e69-4776-bea7-57ae8d297424"
KV_READER = "21090545-7ca7-4776-b22c-e363652d74d2"
VM_CONTRIBUTOR = "9980e02c-c2be-4d73-94e8-173b1dc7cf3c"
EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"

_KV_MANAGEMENT_READS = [
    "Microsoft.Authorization/*/read",
    "Microsoft.Insights/alertRules/*",
    "Microsoft.Resources/deployments/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Support/*",
    "Microsoft.KeyVault/checkNameAvailability/read",
    "Microsoft.KeyVault/deletedVaults/read",
    "Microsoft.KeyVault/locations/*/read",
    "Microsoft.KeyVault/vaults/*/read",
    "Microsoft.KeyVault/operations/read",
]


def _role(guid: str, name: str, description: str, actions: list[str], *, not_actions: list[str] | None = None,
          data_actions: list[str] | None = None) -> dict[str, Any]:
    return {
        "guid": guid,
        "roleName": name,
        "description": description,
        "permissions": [{"actions": actions, "notActions": not_actions or [], "dataActions": data_actions or [],
                         "notDataActions": []}],
    }


BUILT_IN_ROLES: list[dict[str, Any]] = [
    _role(OWNER, "Owner", "Grants full access to manage all resources, including the ability to assign roles in "
          "Azure RBAC.", ["*"]),
    _role(CONTRIBUTOR, "Contributor", "Grants full access to manage all resources, but does not allow you to assign "
          "roles in Azure RBAC.", ["*"],
          not_actions=["Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write",
                       "Microsoft.Authorization/elevateAccess/Action", "Microsoft.Blueprint/blueprintAssignments/write",
                       "Microsoft.Blueprint/blueprintAssignments/delete", "Microsoft.Compute/galleries/share/action",
                       "Microsoft.Purview/consents/write", "Microsoft.Purview/consents/delete",
                       "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
                       "Microsoft.Subscription/cancel/action", "Microsoft.Subscription/enable/action"]),
    _role(READER, "Reader", "View all resources, but does not allow you to make any changes.", ["*/read"]),
    _role(USER_ACCESS_ADMIN, "User Access Administrator", "Lets you manage user access to Azure resources.",
          ["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"]),
    _role(RBAC_ADMIN, "Role Based Access Control Administrator", "Manage access to Azure resources by assigning "
          "roles using Azure RBAC. This role does not allow you to manage access using other ways, such as Azure "
          "Policy.", ["Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleAssignments/delete",
                      "*/read", "Microsoft.Support/*"]),
    _role(KV_ADMIN, "Key Vault Administrator", "Perform all data plane operations on a key vault and all objects in "
          "it, including certificates, keys, and secrets.", list(_KV_MANAGEMENT_READS),
          data_actions=["Microsoft.KeyVault/vaults/*"]),
    _role(KV_CRYPTO_OFFICER, "Key Vault Crypto Officer", "Perform any action on the keys of a key vault, except "
          "manage permissions.", list(_KV_MANAGEMENT_READS),
          data_actions=["Microsoft.KeyVault/vaults/keys/*", "Microsoft.KeyVault/vaults/keyrotationpolicies/*"]),
    _role(KV_CRYPTO_USER, "Key Vault Crypto User", "Perform cryptographic operations using keys.", [],
          data_actions=["Microsoft.KeyVault/vaults/keys/read", "Microsoft.KeyVault/vaults/keys/update/action",
                        "Microsoft.KeyVault/vaults/keys/backup/action", "Microsoft.KeyVault/vaults/keys/encrypt/action",
                        "Microsoft.KeyVault/vaults/keys/decrypt/action", "Microsoft.KeyVault/vaults/keys/wrap/action",
                        "Microsoft.KeyVault/vaults/keys/unwrap/action", "Microsoft.KeyVault/vaults/keys/sign/action",
                        "Microsoft.KeyVault/vaults/keys/verify/action"]),
    _role(KV_READER, "Key Vault Reader", "Read metadata of key vaults and its certificates, keys, and secrets.",
          list(_KV_MANAGEMENT_READS),
          data_actions=["Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"]),
    _role(RELEASE_USER, "Key Vault Crypto Service Release User", "Release keys.", [],
          data_actions=["Microsoft.KeyVault/vaults/keys/release/action"]),
    _role(VM_CONTRIBUTOR, "Virtual Machine Contributor", "Create and manage virtual machines, manage disks, install "
          "and run software, reset password of the root user of the virtual machine using VM extensions, and manage "
          "local user accounts using VM extensions.",
          ["Microsoft.Authorization/*/read", "Microsoft.Compute/availabilitySets/*", "Microsoft.Compute/locations/*",
           "Microsoft.Compute/virtualMachines/*", "Microsoft.Compute/virtualMachineScaleSets/*",
           "Microsoft.Compute/disks/write", "Microsoft.Compute/disks/read", "Microsoft.Compute/disks/delete",
           "Microsoft.DevTestLab/schedules/*", "Microsoft.Insights/alertRules/*",
           "Microsoft.Network/networkInterfaces/*", "Microsoft.Network/virtualNetworks/read",
           "Microsoft.Network/virtualNetworks/subnets/join/action", "Microsoft.Resources/deployments/*",
           "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Support/*",
           "Microsoft.Storage/storageAccounts/listKeys/action", "Microsoft.Storage/storageAccounts/read"]),
    _role(EVENTGRID_DATA_SENDER, "EventGrid Data Sender", "Allows send access to event grid events.",
          ["Microsoft.Authorization/*/read", "Microsoft.EventGrid/topics/read", "Microsoft.EventGrid/domains/read",
           "Microsoft.EventGrid/partnerNamespaces/read", "Microsoft.Resources/subscriptions/resourceGroups/read",
           "Microsoft.EventGrid/namespaces/read"],
          data_actions=["Microsoft.EventGrid/events/send/action"]),
]


def app_operator_actions(may_write_role_definitions: bool) -> list[str]:
    """The twin's least-privilege custom role for the app at subscription scope."""
    actions = [
        "Microsoft.Compute/virtualMachines/read",
        "Microsoft.Compute/virtualMachines/instanceView/read",
        "Microsoft.Compute/virtualMachines/runCommand/action",
        "Microsoft.Compute/virtualMachines/runCommands/read",
        "Microsoft.Compute/virtualMachines/runCommands/write",
        "Microsoft.Compute/virtualMachines/runCommands/delete",
        "Microsoft.Compute/locations/operations/read",
        "Microsoft.Compute/locations/runCommands/read",
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        "Microsoft.Authorization/roleAssignments/read",
        "Microsoft.Authorization/roleDefinitions/read",
    ]
    if may_write_role_definitions:
        actions.append("Microsoft.Authorization/roleDefinitions/write")
    return actions
