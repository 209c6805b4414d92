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

  def test_the_adapter_is_found_by_name
    adapter = @server.pubsub # ActionCable requires action_cable/subscription_adapter/nsq itself
    assert_equal "ActionCable::SubscriptionAdapter::Nsq", adapter.class.name
  end

  def test_subscribing_through_rails_is_refused_with_a_pointer_to_the_gateway
    error = assert_raises(NotImplementedError) { @server.pubsub.subscribe("chat_room_1", -> {}) }
    assert_match(/pushgate gateway/, error.message)
  end
end
