// Kafka's own Java client against a broker: an idempotent acks=all producer, then a group-less
// consumer (assign + seekToBeginning). Prints one JSON object per line for the Python test to check.
//
// usage: java -cp 'kafka-libs/*' ProduceConsume.java BOOTSTRAP TOPIC COUNT COMPRESSION BASE_TIMESTAMP

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class ProduceConsume {
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

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        int count = Integer.parseInt(args[2]);
        String compression = args[3];
        long baseTs = Long.parseLong(args[4]);

        Properties pp = new Properties();
        pp.put("bootstrap.servers", bootstrap);
        pp.put("acks", "all");
        pp.put("enable.idempotence", "true");
        pp.put("compression.type", compression);
        pp.put("linger.ms", "20");
        pp.put("delivery.timeout.ms", "30000");
        pp.put("request.timeout.ms", "20000");
        pp.put("max.block.ms", "20000");
        pp.put("key.serializer", StringSerializer.class.getName());
        pp.put("value.serializer", StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
            List<Future<RecordMetadata>> futures = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                RecordHeaders headers = new RecordHeaders();
                headers.add("i", Integer.toString(i).getBytes(StandardCharsets.UTF_8));
                headers.add("client", "java".getBytes(StandardCharsets.UTF_8));
                String value = "value-" + i + ":" + "x".repeat(200);
                futures.add(producer.send(new ProducerRecord<>(topic, i % 2, baseTs + i, "key-" + i, value, headers)));
            }
            for (Future<RecordMetadata> f : futures) {
                RecordMetadata md = f.get();
                System.out.println("{\"event\":\"sent\",\"partition\":" + md.partition() + ",\"offset\":" + md.offset()
                        + ",\"timestamp\":" + md.timestamp() + "}");
            }
        }

        Properties cp = new Properties();
        cp.put("bootstrap.servers", bootstrap);
        cp.put("enable.auto.commit", "false");
        cp.put("auto.offset.reset", "none");
        cp.put("key.deserializer", StringDeserializer.class.getName());
        cp.put("value.deserializer", StringDeserializer.class.getName());
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            List<TopicPartition> parts = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1));
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            System.out.println("{\"event\":\"end_offsets\",\"p0\":" + consumer.endOffsets(parts).get(parts.get(0))
                    + ",\"p1\":" + consumer.endOffsets(parts).get(parts.get(1)) + "}");
            int seen = 0;
            long deadline = System.currentTimeMillis() + 30000;
            while (seen < count && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    StringBuilder h = new StringBuilder("[");
                    for (Header header : r.headers()) {
                        if (h.length() > 1) h.append(',');
                        h.append('[').append(q(header.key())).append(',')
                                .append(q(new String(header.value(), StandardCharsets.UTF_8))).append(']');
                    }
                    h.append(']');
                    System.out.println("{\"event\":\"received\",\"partition\":" + r.partition() + ",\"offset\":" + r.offset()
                            + ",\"key\":" + q(r.key()) + ",\"value\":" + q(r.value()) + ",\"headers\":" + h
                            + ",\"timestamp\":" + r.timestamp() + ",\"timestampType\":" + q(r.timestampType().name) + "}");
                    seen++;
                }
            }
            System.out.println("{\"event\":\"done\",\"received\":" + seen + "}");
        }
    }
}
