//! The gateway's side of RabbitMQ: it declares each task group's result queue (the SDK's
//! `Executor` consumes it without declaring it) and publishes results there, with publisher
//! confirms, so a result leaves the gateway's outbox only once the broker holds it.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tracing::{info, warn};

/// How long one broker operation (connect, declare, a batch of confirms) may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the broker could not do something.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BrokerError {
    /// The AMQP connection or channel failed.
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker could not take a message (a negative confirm); it is sent again.
    #[error("RabbitMQ refused a result (nack)")]
    Refused,
    /// The broker did not answer in time.
    #[error("RabbitMQ did not answer within {0:?}")]
    Timeout(Duration),
}

/// One result message for one queue.
pub(crate) struct Message {
    pub(crate) queue: String,
    pub(crate) body: Vec<u8>,
    /// Completion time, Unix seconds (the SDK shows it as an error's completion time).
    pub(crate) timestamp: u64,
}

/// A connection to RabbitMQ, opened on first use and again after it fails.
pub(crate) struct Broker {
    url: String,
    queue_expiry_ms: u32,
    channel: Mutex<Option<(Connection, Channel)>>,
}

async fn timed<T>(
    future: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(BrokerError::Timeout(OPERATION_TIMEOUT)),
    }
}

impl Broker {
    pub(crate) fn new(url: String, queue_expiry: Duration) -> Broker {
        Broker {
            url,
            queue_expiry_ms: u32::try_from(queue_expiry.as_millis()).unwrap_or(u32::MAX),
            channel: Mutex::new(None),
        }
    }

    /// The open channel (with publisher confirms), connecting first if needed.
    async fn channel(
        &self,
        slot: &mut Option<(Connection, Channel)>,
    ) -> Result<Channel, BrokerError> {
        if let Some((connection, channel)) = slot.as_ref() {
            if connection.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        *slot = None;
        let connection = timed(Connection::connect(
            &self.url,
            ConnectionProperties::default(),
        ))
        .await?;
        let channel = timed(connection.create_channel()).await?;
        timed(channel.confirm_select(ConfirmSelectOptions::default())).await?;
        info!("connected to RabbitMQ for Globus Compute results");
        *slot = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// Declares the durable queue `name` (idempotent), which RabbitMQ deletes after it has
    /// gone unused for the configured expiry.
    pub(crate) async fn declare(&self, name: &str) -> Result<(), BrokerError> {
        let mut slot = self.channel.lock().await;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-expires".into(),
            AMQPValue::LongUInt(self.queue_expiry_ms),
        );
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        // One retry on a fresh connection: the cached one may have died since its last use.
        for attempt in 0..2 {
            let channel = self.channel(&mut slot).await?;
            match timed(channel.queue_declare(name.into(), options, arguments.clone())).await {
                Ok(_) => return Ok(()),
                Err(error) if attempt == 0 => {
                    warn!(%error, queue = name, "declaring a result queue failed; reconnecting");
                    *slot = None;
                }
                Err(error) => return Err(error),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Publishes `messages` (persistent, through the default exchange to their queues) and
    /// waits for the broker's confirms. Returns how many the broker could not route (their
    /// queue is gone: expired or deleted by hand).
    pub(crate) async fn publish(&self, messages: &[&Message]) -> Result<usize, BrokerError> {
        let mut slot = self.channel.lock().await;
        let result = self.publish_on(&mut slot, messages).await;
        if result.is_err() {
            *slot = None;
        }
        result
    }

    async fn publish_on(
        &self,
        slot: &mut Option<(Connection, Channel)>,
        messages: &[&Message],
    ) -> Result<usize, BrokerError> {
        let channel = self.channel(slot).await?;
        let mut confirms = Vec::with_capacity(messages.len());
        for message in messages {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_timestamp(message.timestamp);
            let confirm = timed(channel.basic_publish(
                "".into(),
                message.queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                properties,
            ))
            .await?;
            confirms.push(confirm);
        }
        let mut unroutable = 0;
        for (confirm, message) in confirms.into_iter().zip(messages) {
            match timed(confirm).await? {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(_)) => {
                    warn!(queue = %message.queue, "a result queue is gone; its result stays readable over HTTP");
                    unroutable += 1;
                }
                Confirmation::Nack(_) => return Err(BrokerError::Refused),
            }
        }
        Ok(unroutable)
    }
}
