<?xml version="1.0" encoding="UTF-8"?>
<!-- The standard dialect's requests to the canonical request (settlement.soap.canonical). -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xmlns:s="urn:settlement:soap:v1"
                exclude-result-prefixes="s">
  <xsl:output method="xml" encoding="UTF-8"/>
  <xsl:param name="code"/>
  <xsl:param name="operation"/>

  <xsl:template match="s:EligibilityRequest">
    <request><id_number><xsl:value-of select="s:idNumber"/></id_number><on><xsl:value-of select="s:on"/></on></request>
  </xsl:template>

  <xsl:template match="s:QuoteRequest">
    <request><xsl:apply-templates select="s:claim"/></request>
  </xsl:template>

  <xsl:template match="s:SettleRequest">
    <request>
      <transaction_id><xsl:value-of select="s:messageId"/></transaction_id>
      <quote_id><xsl:value-of select="s:quoteId"/></quote_id>
      <xsl:apply-templates select="s:claim"/>
    </request>
  </xsl:template>

  <xsl:template match="s:ReverseRequest">
    <request>
      <transaction_id><xsl:value-of select="s:messageId"/></transaction_id>
      <settlement_id><xsl:value-of select="s:settlementId"/></settlement_id>
      <reason><xsl:value-of select="s:reason"/></reason>
    </request>
  </xsl:template>

  <xsl:template match="s:CancelRequest">
    <request>
      <transaction_id><xsl:value-of select="s:messageId"/></transaction_id>
      <original_transaction_id><xsl:value-of select="s:originalMessageId"/></original_transaction_id>
      <reason><xsl:value-of select="s:reason"/></reason>
    </request>
  </xsl:template>

  <xsl:template match="s:GetSettlementRequest">
    <request><settlement_id><xsl:value-of select="s:settlementId"/></settlement_id></request>
  </xsl:template>

  <xsl:template match="s:claim">
    <claim>
      <hospital>
        <code><xsl:value-of select="s:hospital/s:code"/></code>
        <level><xsl:value-of select="s:hospital/s:level"/></level>
        <name><xsl:value-of select="s:hospital/s:name"/></name>
      </hospital>
      <visit>
        <id><xsl:value-of select="s:visit/s:id"/></id>
        <type><xsl:value-of select="s:visit/s:type"/></type>
        <admission_date><xsl:value-of select="s:visit/s:admissionDate"/></admission_date>
        <discharge_date><xsl:value-of select="s:visit/s:dischargeDate"/></discharge_date>
        <settled_at><xsl:value-of select="s:visit/s:settledAt"/></settled_at>
      </visit>
      <patient>
        <id_number><xsl:value-of select="s:patient/s:idNumber"/></id_number>
        <name><xsl:value-of select="s:patient/s:name"/></name>
        <scheme><xsl:value-of select="s:patient/s:scheme"/></scheme>
        <region><xsl:value-of select="s:patient/s:region"/></region>
      </patient>
      <lines>
        <xsl:for-each select="s:lines/s:line">
          <item>
            <id><xsl:value-of select="s:id"/></id>
            <code><xsl:value-of select="s:code"/></code>
            <name><xsl:value-of select="s:name"/></name>
            <quantity><xsl:value-of select="s:quantity"/></quantity>
            <unit_price><xsl:value-of select="s:unitPrice"/></unit_price>
            <amount><xsl:value-of select="s:amount"/></amount>
          </item>
        </xsl:for-each>
      </lines>
      <total><xsl:value-of select="s:total"/></total>
    </claim>
  </xsl:template>
</xsl:stylesheet>
