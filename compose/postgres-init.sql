-- Run by the postgres image on its first start (empty volume): the consumers' own databases.
CREATE DATABASE inventory OWNER outbox;
CREATE DATABASE email OWNER outbox;
