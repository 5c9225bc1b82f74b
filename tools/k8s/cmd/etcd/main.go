// Command etcd is upstream's etcd server, built at the release go.mod pins, for vkube's tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
