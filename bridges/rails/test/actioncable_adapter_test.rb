# frozen_string_literal: true

require_relative "test_helper"
require "active_support/all"
require "action_cable"

# `adapter: nsq`: ActionCable's broadcasts become pushgate envelopes in NSQ.
class ActionCableAdapterTest < Minitest::Test
  def setup
    @topic = unique_topic("cable")
    @server = ActionCable::Server::Base.new
    @server.config.cable = { "adapter" => "nsq", "url" => "http://#{NSQD.http_address}", "topic" => @topic }
    @server.config.logger = Logger.new(nil)
  end

  def test_broadcast_reaches_nsq_as_an_envelope_for_the_stream
    @server.broadcast("chat_room_1", { message: "hi", from: "Zoë" })
    @server.broadcast("chat_room_1", "a bare string")
    first, second = NSQD.read_back(@topic, 2)
    assert_equal({ "channel" => "chat_room_1", "data" => { "message" => "hi", "from" => "Zoë" } }, first.except("id"))
    assert_equal "a bare string", second["data"]
  end

  def test_a_broadcast_may_name_a_connection_to_skip
    @server.broadcast("chat_room_1", { message: "not for the sender" }, exclude_socket: "sid-9")
    Pushgate::Cable.with_socket_id("sid-10") do
      @server.broadcast("chat_room_1", "to the others", to_others: true)
      @server.broadcast("chat_room_1", "to everyone")
    end
    envelopes = NSQD.read_back(@topic, 3).map { |e| e.except("id") }
    assert_equal [{ "channel" => "chat_room_1", "data" => { "message" => "not for the sender" }, "exclude" => "sid-9" },
                  { "channel" => "chat_room_1", "data" => "to the others", "exclude" => "sid-10" },
                  { "channel" => "chat_room_1", "data" => "to everyone" }], envelopes
  end

  def test_the_adapter_is_found_by_name
    adapter = @server.pubsub # ActionCable requires action_cable/subscription_adapter/nsq itself
    assert_equal "ActionCable::SubscriptionAdapter::Nsq", adapter.class.name
  end

  def test_subscribing_through_rails_is_refused_with_a_pointer_to_the_gateway
    error = assert_raises(NotImplementedError) { @server.pubsub.subscribe("chat_room_1", -> {}) }
    assert_match(/pushgate gateway/, error.message)
  end
end
