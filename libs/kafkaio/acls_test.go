package kafkaio

import (
	"os"
	"strings"
	"testing"
)

// docs/deploy.md lists the grants the code gives (for the default names).
func TestTheDeployDocListsTheServicesACLs(t *testing.T) {
	b, err := os.ReadFile("../../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	if table := ACLTable(NewTopics(""), DefaultGroups()); !strings.Contains(string(b), table) {
		t.Fatalf("docs/deploy.md does not hold the ACL table of kafkaio.ServiceGrants; regenerate it with go run ./tools/kafkaacls -format table:\n%s", table)
	}
	for _, svc := range Services {
		if _, err := ServiceGrants(svc, NewTopics(""), DefaultGroups()); err != nil {
			t.Errorf("%s: %v", svc, err)
		}
	}
	if _, err := ServiceGrants("nosuch", NewTopics(""), DefaultGroups()); err == nil {
		t.Fatal("an unknown service has grants")
	}
}
