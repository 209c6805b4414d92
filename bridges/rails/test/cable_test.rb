# frozen_string_literal: true

require_relative "test_helper"
require "active_support/all"
require "active_support/message_verifier"
require "action_cable"
require "action_view"

# The /cable pieces: Turbo's signed stream names (checked against
# ActiveSupport itself and the vectors the gateway verifies), the cable URL
# with a token, the view helpers, and the adapter's channel_prefix.
class CableTest < Minitest::Test
  SIGNED = JSON.parse(File.read(File.join(VECTORS, "signed_streams.json")))
  KEY = SIGNED["key"]

  def setup
    Pushgate.configure do |c|
      c.turbo_streams_secret = KEY
      c.cable_url = "wss://push.example.com/cable?v=1"
      c.jwt_secret = "test-secret-with-at-least-32-bytes!!"
    end
  end

  def teardown
    Pushgate.instance_variable_set(:@config, nil)
  end

  def test_signed_stream_names_are_what_active_support_and_the_vectors_say
    verifier = ActiveSupport::MessageVerifier.new(KEY, digest: "SHA256", serializer: JSON)
    SIGNED["valid"].select { |v| v["alphabet"] == "standard" }.each do |vector|
      assert_equal vector["signed"], Pushgate::Cable.signed_stream_name(vector["name"])
      assert_equal vector["signed"], verifier.generate(vector["name"])
    end
  end

  def test_stream_names_join_streamables_as_turbo_does
    record = Struct.new(:to_gid_param).new("Z2lkOi8vYXBwL1Jvb20vMQ")
    assert_equal "Z2lkOi8vYXBwL1Jvb20vMQ:messages", Pushgate::Cable.stream_name_from([record, :messages])
    assert_equal "room:1", Pushgate::Cable.stream_name_from(["room", 1])
    verifier = ActiveSupport::MessageVerifier.new(KEY, digest: "SHA256", serializer: JSON)
    assert_equal "room:1", verifier.verify(Pushgate::Cable.signed_stream_name("room", 1))
  end

  def test_the_cable_url_carries_a_token_for_the_user
    url = URI(Pushgate::Cable.url("42", ttl: 60))
    assert_equal ["wss", "push.example.com", "/cable"], [url.scheme, url.host, url.path]
    query = URI.decode_www_form(url.query).to_h
    assert_equal "1", query["v"]
    claims = JSON.parse(query["jid"].split(".")[1].tr("-_", "+/").then { |s| (s + "=" * (-s.size % 4)).unpack1("m") })
    assert_equal "42", claims["sub"]
    assert_equal 60, claims["exp"] - claims["iat"]
  end

  def test_a_signed_out_visitor_gets_no_token_only_when_asked
    [nil, ""].each do |nobody|
      error = assert_raises(ArgumentError) { Pushgate::Cable.url(nobody) }
      assert_match(/nobody is signed in.*anonymous: true/, error.message)
    end
    assert_equal "wss://push.example.com/cable?v=1", Pushgate::Cable.url(nil, anonymous: true)
    assert_equal "wss://push.example.com/cable", Pushgate::Cable.url(nil, anonymous: true, base: "wss://push.example.com/cable?jid=old")
    assert_match(/jid=/, Pushgate::Cable.url("5", anonymous: true)) # a signed-in user still gets a token
    view = ActionView::Base.empty
    view.extend(Pushgate::CableHelper)
    assert_equal '<meta name="action-cable-url" content="wss://push.example.com/cable?v=1" />',
                 view.pushgate_cable_meta_tag(nil, anonymous: true)
    assert_raises(ArgumentError) { view.pushgate_cable_meta_tag(nil) }
  end

  def test_missing_settings_are_named
    Pushgate.config.turbo_streams_secret = nil
    assert_match(/PUSHGATE_TURBO_STREAMS_SECRET/, assert_raises(ArgumentError) { Pushgate::Cable.signed_stream_name("x") }.message)
    Pushgate.config.cable_url = nil
    assert_match(/PUSHGATE_CABLE_URL/, assert_raises(ArgumentError) { Pushgate::Cable.url("1") }.message)
  end

  def test_view_helpers_render_the_meta_tag_and_the_stream_source_element
    view = ActionView::Base.empty
    view.extend(Pushgate::CableHelper)
    meta = view.pushgate_cable_meta_tag("7")
    assert_match(%r{\A<meta name="action-cable-url" content="wss://push\.example\.com/cable\?v=1&amp;jid=[\w.-]+" />\z}, meta)
    element = view.pushgate_turbo_stream_from("room", 1, data: { x: 1 })
    assert_equal %(<turbo-cable-stream-source data-x="1" channel="Turbo::StreamsChannel" signed-stream-name="#{Pushgate::Cable.signed_stream_name("room", 1)}"></turbo-cable-stream-source>), element
  end

  def test_the_adapter_prefixes_streams_with_channel_prefix_but_not_personal_streams
    topic = unique_topic("cable-prefix")
    server = ActionCable::Server::Base.new
    server.config.cable = { "adapter" => "nsq", "url" => "http://#{NSQD.http_address}", "topic" => topic,
                            "channel_prefix" => "myapp" }
    server.config.logger = Logger.new(nil)
    server.broadcast("chat_room_1", { n: 1 })
    server.broadcast("#42", { n: 2 })
    unprefixed = ActionCable::Server::Base.new
    unprefixed.config.cable = { "adapter" => "nsq", "url" => "http://#{NSQD.http_address}", "topic" => topic,
                                "channel_prefix" => "" }
    unprefixed.config.logger = Logger.new(nil)
    unprefixed.broadcast("chat_room_1", { n: 3 })
    channels = NSQD.read_back(topic, 3).map { |m| [m["channel"], m["data"]["n"]] }
    assert_equal [["myapp:chat_room_1", 1], ["#42", 2], ["chat_room_1", 3]], channels
  end
end
