// Command kafkaacls prints the least-privilege Kafka ACLs of closedloop's
// services (kafkaio.ServiceGrants) for a deployment's topic prefix and
// consumer groups: as kafka-acls.sh commands, one Kafka user per service,
// or as the markdown table of docs/deploy.md.
//
//	go run ./tools/kafkaacls -user-prefix closedloop-          # kafka-acls.sh commands
//	go run ./tools/kafkaacls -format table                      # the table
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/closedloop/closedloop/libs/kafkaio"
)

func main() {
	prefix := flag.String("topic-prefix", "", "CLOSEDLOOP_TOPIC_PREFIX of the deployment")
	userPrefix := flag.String("user-prefix", "closedloop-", "each service's Kafka user is this prefix and the service name")
	format := flag.String("format", "commands", "commands (kafka-acls.sh) or table (markdown)")
	d := kafkaio.DefaultGroups()
	flag.StringVar(&d.Normalizer, "normalizer-group", d.Normalizer, "NORMALIZER_GROUP")
	flag.StringVar(&d.Enricher, "enricher-group", d.Enricher, "ENRICHER_GROUP")
	flag.StringVar(&d.SinkWarehouse, "sink-warehouse-group", d.SinkWarehouse, "SINK_WAREHOUSE_GROUP")
	flag.StringVar(&d.SinkConsole, "sink-console-group", d.SinkConsole, "SINK_CONSOLE_GROUP")
	flag.StringVar(&d.SinkWebhook, "sink-webhook-group", d.SinkWebhook, "SINK_WEBHOOK_GROUP (each destination's group starts with it)")
	flag.Parse()
	t := kafkaio.NewTopics(*prefix)
	switch *format {
	case "table":
		fmt.Print(kafkaio.ACLTable(t, d))
	case "commands":
		for _, svc := range kafkaio.Services {
			grants, err := kafkaio.ServiceGrants(svc, t, d)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			fmt.Printf("# %s\n", svc)
			for _, c := range kafkaio.KafkaACLCommands(*userPrefix+svc, grants) {
				fmt.Println(c)
			}
		}
	default:
		fmt.Fprintln(os.Stderr, "kafkaacls: -format is commands or table")
		os.Exit(2)
	}
}
