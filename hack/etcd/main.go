// Command etcd is the upstream etcd server at the version pinned in go.mod,
// built from Go modules because kube-apiserver needs a newer etcd than the
// distribution ships.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
