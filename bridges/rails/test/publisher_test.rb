# frozen_string_literal: true

require_relative "test_helper"

# The publisher against a real nsqd.
class PublisherTest < Minitest::Test
  def test_publish_to_user_and_broadcast
    topic = unique_topic("pub")
    publisher = publisher_for(topic)
    publisher.publish("user" => "42", "data" => { "event" => "paid" })
    publisher.publish("channel" => "news", "data" => [1, 2], "id" => "fixed-id")
    first, second = NSQD.read_back(topic, 2)
    assert_equal({ "user" => "42", "data" => { "event" => "paid" } }, first.except("id"))
    assert_match(/\A\h{32}\z/, first["id"])
    assert_equal({ "channel" => "news", "data" => [1, 2], "id" => "fixed-id" }, second)
  end

  def test_keep_alive_one_connection_per_thread
    publisher = publisher_for(unique_topic("keepalive"))
    publisher.publish("channel" => "c", "data" => 1)
    http = publisher.send(:state)[:http]
    publisher.publish("channel" => "c", "data" => 2)
    assert_same http, publisher.send(:state)[:http]
    other = Thread.new { publisher.publish("channel" => "c", "data" => 3); publisher.send(:state)[:http] }.value
    refute_same http, other
  end

  def test_batch_is_one_mpub_nested_joins_and_raise_sends_nothing
    topic = unique_topic("batch")
    publisher = publisher_for(topic)
    assert_raises(RuntimeError) do
      publisher.batch do
        publisher.publish("channel" => "c", "data" => "lost on purpose")
        raise "rolled back"
      end
    end
    assert_equal 0, NSQD.message_count(topic)
    publisher.batch do
      3.times do |n|
        publisher.publish("channel" => "c", "data" => n)
        assert_equal 0, NSQD.message_count(topic), "nothing leaves before the batch ends"
        publisher.batch { publisher.publish("user" => n, "data" => n) }
      end
    end
    assert_equal [0, 0, 1, 1, 2, 2], NSQD.read_back(topic, 6).map { |m| m["data"] }
  end

  def test_threads_publish_concurrently
    topic = unique_topic("threads")
    publisher = publisher_for(topic)
    8.times.map { |t| Thread.new { 25.times { |n| publisher.publish("channel" => "c", "data" => [t, n]) } } }.each(&:join)
    assert_equal 200, NSQD.message_count(topic)
  end

  def test_nsqd_refusal_raises_with_nsqds_message
    error = assert_raises(Pushgate::PublishError) { publisher_for("bad topic!").publish("channel" => "c", "data" => 1) }
    assert_equal 400, error.status
    assert_equal "INVALID_TOPIC", error.nsqd_message
    error = assert_raises(Pushgate::PublishError) do
      publisher_for("t", max_message_bytes: 100).publish("channel" => "c", "data" => "x" * 200)
    end
    assert_match(/over the gateway's limit/, error.message)
  end

  def test_nsqd_down_raises_after_the_retries
    config = Pushgate::Configuration.new({})
    config.nsqd_http_address = "127.0.0.1:#{free_port}"
    config.retries = 2
    config.backoff = 0.01
    error = assert_raises(Pushgate::NsqdUnavailable) do
      Pushgate::Publisher.new(config).publish("channel" => "c", "data" => 1)
    end
    assert_match(/after 3 attempts/, error.message)
    assert_kind_of Pushgate::PublishError, error
  end

  def test_a_stale_keep_alive_connection_is_retried
    own = Nsqd.new.start
    topic = unique_topic("stale")
    publisher = publisher_for(topic, nsqd: own)
    publisher.publish("channel" => "c", "data" => "before")
    own.stop
    own.start # the kept-alive socket is now dead
    publisher.publish("channel" => "c", "data" => "after")
    assert_equal %w[after before], own.read_back(topic, 2).map { |m| m["data"] }.sort
  ensure
    own&.cleanup
  end
end
