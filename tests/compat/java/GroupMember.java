// Kafka's own Java consumer as one member of a consumer group: subscribe(), poll(), commitSync()
// after every non-empty poll, until STOP_FILE exists; then close() (which leaves the group).
// Prints one JSON object per line (assignments and every record) for the Python test to check.
//
// usage: java -cp 'kafka-libs/*' GroupMember.java BOOTSTRAP GROUP TOPIC CLIENT_ID STOP_FILE

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.stream.Collectors;

import org.apache.kafka.clients.consumer.CommitFailedException;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.serialization.StringDeserializer;

public class GroupMember {
    static String q(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    static String parts(Collection<TopicPartition> tps) {
        return tps.stream().map(tp -> Integer.toString(tp.partition())).sorted().collect(Collectors.joining(",", "[", "]"));
    }

    static synchronized void emit(String json) {
        System.out.println(json);
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String group = args[1];
        String topic = args[2];
        String clientId = args[3];
        Path stopFile = Path.of(args[4]);

        Properties cp = new Properties();
        cp.put("bootstrap.servers", bootstrap);
        cp.put("group.id", group);
        cp.put("client.id", clientId);
        cp.put("group.protocol", "classic");
        // The one assignor every client of the mixed group supports under the same name ("range").
        cp.put("partition.assignment.strategy", "org.apache.kafka.clients.consumer.RangeAssignor");
        cp.put("enable.auto.commit", "false");
        cp.put("auto.offset.reset", "earliest");
        cp.put("session.timeout.ms", "6000");
        cp.put("heartbeat.interval.ms", "500");
        cp.put("max.poll.interval.ms", "20000");
        cp.put("key.deserializer", StringDeserializer.class.getName());
        cp.put("value.deserializer", StringDeserializer.class.getName());
        int received = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                    emit("{\"event\":\"revoked\",\"partitions\":" + parts(partitions) + "}");
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    emit("{\"event\":\"assigned\",\"partitions\":" + parts(partitions) + "}");
                }
            });
            while (!Files.exists(stopFile)) {
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                for (ConsumerRecord<String, String> r : records) {
                    emit("{\"event\":\"record\",\"partition\":" + r.partition() + ",\"offset\":" + r.offset()
                            + ",\"value\":" + q(r.value()) + "}");
                    received++;
                }
                if (!records.isEmpty()) {
                    try {
                        consumer.commitSync(Duration.ofSeconds(30));
                        emit("{\"event\":\"committed\"}");
                    } catch (CommitFailedException | RebalanceInProgressException e) {
                        // The group rebalanced under us: the records are redelivered to the new owner.
                        emit("{\"event\":\"commit_failed\",\"error\":" + q(e.getClass().getSimpleName()) + "}");
                    }
                }
            }
        }
        emit("{\"event\":\"done\",\"received\":" + received + "}");
    }
}
