"""SHA-256 digests of the published dataset files, and the function that computes them.

Shared by the downloader (checks what it fetched) and the loaders (check what they read).
"""
from __future__ import annotations

import hashlib

__all__ = ["KNOWN_SHA256", "sha256sum"]

# SHA-256 of the files as they are laid out in a data root (SNAP, Planetoid and graspologic
# releases; DyGLib's Enron and US Legis as converted by the downloader). A None digest is
# unknown: the downloader prints the digest it computed.
KNOWN_SHA256 = {
    "drosophila/left_adjacency.csv":
        "f23ba630f10dff95164ddbbdccf7d4fe1ac01a9a8ed77db26069af4a6248a1cf",
    "drosophila/left_cell_labels.csv":
        "a733652a33d5dde5c7cbdc9d8c0e679680cd000dc11edf3ea762a4da43b764c9",
    "drosophila/right_adjacency.csv":
        "b9684d323e3f91ac5bf8c3691ff3e0635ef40fa2dee8e048161633760c84791d",
    "drosophila/right_cell_labels.csv":
        "80547ac9df6b3fc5abe5844c04bc5da56b48c7cac5eb13ab3cc2f8695cd6de1d",
    "email_eu_core/email-Eu-core-department-labels.txt":
        "8724324273873bba3b4ba79444d5113bf8122cb76a51d5396b50f80c29b63f35",
    "email_eu_core/email-Eu-core.txt":
        "275afe50e65b7cb3caadaa9e465e89e9b495b0e7b5a75058b29d70708cd73540",
    "email_eu_core_temporal/email-Eu-core-temporal.txt.gz":
        "ad0af2f9375214590b34b472b3d8ff4e7bbe7432d3653841bbaaeadae230fc13",
    "planetoid/ind.citeseer.allx":
        "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
    "planetoid/ind.citeseer.ally":
        "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
    "planetoid/ind.citeseer.graph":
        "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
    "planetoid/ind.citeseer.test.index":
        "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
    "planetoid/ind.citeseer.tx":
        "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
    "planetoid/ind.citeseer.ty":
        "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
    "planetoid/ind.citeseer.x":
        "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
    "planetoid/ind.citeseer.y":
        "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    "planetoid/ind.cora.allx":
        "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
    "planetoid/ind.cora.ally":
        "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
    "planetoid/ind.cora.graph":
        "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
    "planetoid/ind.cora.test.index":
        "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
    "planetoid/ind.cora.tx":
        "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
    "planetoid/ind.cora.ty":
        "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
    "planetoid/ind.cora.x":
        "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
    "planetoid/ind.cora.y":
        "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    "stackoverflow_a2q_prefix/sx-stackoverflow-a2q.first50k.txt":
        "9fcecd4a865aea886abaa02ca1b8baf0c619ab61325083a86961427427b1cae7",
    "snap_collegemsg/CollegeMsg.txt.gz":
        "42b894ca71e1963fcfd9682fd9ac5efaeca4ef9a1d472f49891788ef662a5509",
    "dyglib_enron/enron.txt.gz":
        "4b4c3d86d2d5937b4304d8430ba0793d1269a862de0d07490c7879b719999eec",
    "dyglib_uslegis/uslegis.txt.gz":
        "34b33b2078e133e092e528e675e224182feda814f05d67ac2bc6a2fa035f96ef",
}


def sha256sum(path) -> str:
    """Hex SHA-256 digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
